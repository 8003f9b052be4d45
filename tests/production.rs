//! The production path end to end: the five function binaries as separate processes configured
//! as on Cloud Run (`RUNWAY_BACKEND=gcp`, the environment `infra/environment.json` lists),
//! Firestore and Pub/Sub on Google's emulators with real push subscriptions delivering to
//! `worker`, Cloud Storage on fake-gcs-server, Secret Manager on drongo, and the fakes in
//! `tests/support` for Cloud Build, Cloud Run Admin and GitHub. See `support/production.rs`.

use std::time::{Duration, Instant};

use anyhow::bail;
use http::StatusCode;
use reqwest::Method;
use runway_http::webhook;
use runway_tests::fake_chat::{FakeChat, Service};
use runway_tests::fake_cloud_run::{SECRET_ACCESSOR, served, status_for};
use runway_tests::fake_github::FakeDelivery;
use runway_tests::load_balancer::IAP_CLIENT_ID;
use runway_tests::production::{ADMIN, OTHER_REGION, Production, REGION};
use runway_tests::{GitRepo, streamlit_app};
use serde_json::{Value, json};

pub(crate) const OWNER: &str = "ada@example.com";
const SECRET: &str = "prod-greeting-5c2e9a";
/// What makes the demo's Slack hook URL and its webhook's key secrets.
const SLACK_PATH: &str = "SLACKPROD8812";
const HOOK_KEY: &str = "hook-key-prod-31337-abcdef";
const WAIT: Duration = Duration::from_secs(90);

/// The app's status as `status` shows it to `OWNER`.
pub(crate) async fn status(production: &Production, app: &str) -> anyhow::Result<(u16, Value)> {
    let response = production
        .as_user(Method::GET, "status", &format!("/api/apps/{app}"), OWNER)
        .send()
        .await?;
    let code = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Waits until `predicate` picks a finished release out of the app's status.
pub(crate) async fn wait_for(
    production: &Production,
    app: &str,
    what: &str,
    predicate: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = status(production, app).await?;
        let found = body["releases"].as_array().and_then(|releases| {
            releases
                .iter()
                .find(|r| predicate(r) && matches!(r["state"].as_str(), Some("live" | "failed")))
                .cloned()
        });
        if let Some(release) = found {
            return Ok(release);
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: no finished release; status {body:#}\nlogs:\n{}",
                production.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends the push event GitHub would send for `commit` on `main`, signed.
/// A push as GitHub delivers it: its full body and GitHub's headers (all but the legacy SHA-1
/// `X-Hub-Signature`, which Runway never reads).
pub(crate) async fn push(
    production: &Production,
    repo_id: u64,
    commit: &str,
) -> anyhow::Result<u16> {
    let delivery = uuid::Uuid::new_v4().to_string();
    deliver_push(production, repo_id, commit, &delivery).await
}

/// The push of `commit` as GitHub delivers it, under the delivery id `delivery` (GitHub's
/// Redeliver sends the same one again).
pub(crate) async fn deliver_push(
    production: &Production,
    repo_id: u64,
    commit: &str,
    delivery: &str,
) -> anyhow::Result<u16> {
    let body =
        runway_tests::github_push_payload(repo_id, "ada/demo", "main", &"0".repeat(40), commit)
            .to_string();
    let secret = production.app_webhook_secret("demo");
    let signature = webhook::sign(secret.as_bytes(), body.as_bytes());
    let response = production
        .client
        .post(format!("{}/github/webhook/demo", production.lb.url))
        .header("user-agent", "GitHub-Hookshot/5b2c1a4")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "512003764")
        .header("x-github-hook-installation-target-id", repo_id.to_string())
        .header("x-github-hook-installation-target-type", "repository")
        .header("x-hub-signature-256", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_goes_from_submit_to_delete_on_the_cloud_adapters() -> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let (repo, repo_id) = production.demo_repo(dir.path())?;
    let chat = FakeChat::start().await;

    // Submit through IAP: 202 with the status URL.
    let submitted = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({
            "repo_url": "https://github.com/ada/demo",
            "main_file": "app.py",
            "app_name": "demo",
            "region": "europe-west1",
            "secrets": format!("greeting = \"{SECRET}\"\n"),
            "env": { "MODEL_NAME": "small" },
            "min_instances": 1,
            "notify": format!(
                "slack {}\nwebhook {} secret={HOOK_KEY} success",
                chat.slack_url(SLACK_PATH),
                chat.webhook_url("ops")
            ),
        }))
        .send()
        .await?;
    assert_eq!(submitted.status(), 202);
    let submitted: Value = submitted.json().await?;
    let first_id = submitted["release_id"].as_str().unwrap().to_owned();

    // Live, with the URL Cloud Run gave the service, serving the first revision.
    let first = wait_for(&production, "demo", "the first release", |r| {
        r["id"] == first_id.as_str()
    })
    .await?;
    assert_eq!(first["state"], "live", "{first:#}\n{}", production.logs());
    let service = production
        .cloud_run
        .service(&format!(
            "projects/{}/locations/europe-west1/services/demo",
            production.project
        ))
        .expect("the Cloud Run service exists");
    let url = service["uri"].as_str().unwrap();
    let (_, shown) = status(&production, "demo").await?;
    assert_eq!(shown["url"], url, "{shown:#}");
    let first_image = served(url).await?["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(served(url).await?["revision"], first["revision"]);
    assert_eq!(shown["access"], json!({ "mode": "public" }), "{shown:#}");
    // Another deployer sees it in the team's list (not its repository or access), and cannot
    // open it.
    let as_teammate =
        |path: &str| production.as_user(Method::GET, "status", path, "grace@example.com");
    let mine: Value = as_teammate("/api/apps").send().await?.json().await?;
    assert_eq!(mine["deployments"], json!([]), "{mine:#}");
    let team: Value = as_teammate("/api/apps?team=1").send().await?.json().await?;
    let listed = &team["deployments"][0];
    assert_eq!(listed["app"], "demo", "{team:#}");
    assert_eq!(listed["manageable"], false, "{team:#}");
    assert_eq!(listed["latest_release"]["state"], "live", "{team:#}");
    assert!(
        listed.get("repo_url").is_none() && listed.get("access").is_none(),
        "{team:#}"
    );
    let page = as_teammate("/?team=1").send().await?.text().await?;
    assert!(
        page.contains("demo") && !page.contains("href=\"/apps/demo\""),
        "{page}"
    );
    assert_eq!(as_teammate("/apps/demo").send().await?.status(), 404);
    // The secret reached Cloud Run only as a Secret Manager version, mounted as a file.
    // Its plain variables beside the secrets file's, and one instance kept warm under the cap.
    let env = &service["template"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([
            { "name": "STREAMLIT_SECRETS_FILES", "value": "/secrets/secrets.toml" },
            { "name": "MODEL_NAME", "value": "small" },
        ]),
        "{service:#}"
    );
    assert_eq!(service["template"]["scaling"]["minInstanceCount"], 1);
    // Cloud Run restarts an instance whose Streamlit stops answering.
    let liveness = &service["template"]["containers"][0]["livenessProbe"];
    assert_eq!(
        liveness["httpGet"]["path"], "/_stcore/health",
        "{service:#}"
    );
    assert_eq!(service["template"]["scaling"]["maxInstanceCount"], 2);
    let template = service["template"].to_string();
    assert!(template.contains("runway-app-demo"), "{template}");
    assert!(template.contains("STREAMLIT_SECRETS_FILES"), "{template}");
    assert!(!template.contains(SECRET));
    // It runs as its own account, the only one that may read its secret.
    let account = format!(
        "runway-a-demo@{}.iam.gserviceaccount.com",
        production.project
    );
    assert_eq!(service["template"]["serviceAccount"], account.as_str());
    assert_eq!(
        production.cloud_run.members(
            &format!("projects/{}/secrets/runway-app-demo", production.project),
            SECRET_ACCESSOR
        ),
        [format!("serviceAccount:{account}")]
    );
    // The push webhook is on the repository, with the app's own URL and secret.
    let hooks = production.github.hooks("ada", "demo");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(
        hooks[0].url,
        format!("{}/github/webhook/demo", production.lb.url)
    );
    assert_eq!(hooks[0].events, ["pull_request", "push"]);
    let secret = production.app_webhook_secret("demo");
    assert_eq!(hooks[0].secret.as_deref(), Some(secret.as_str()));
    assert_ne!(secret, production.app_webhook_secret("other"));
    assert_ne!(secret, production.env["RUNWAY_WEBHOOK_SECRET"]);
    // GitHub pinged the new hook, with Hookshot's headers and the hook's signature, and the
    // ingress answered it; a ping it refused would show as a failed delivery on the hook's page.
    let ping = pinged(&production, hooks[0].id).await?;
    assert_eq!(ping.status, Some(200), "{ping:?}\n{}", production.logs());
    assert!(ping.response.contains("pong"), "{ping:?}");

    // A signed push redeploys: a new revision takes the traffic.
    let second_commit = repo.commit(&[("app.py", &streamlit_app("Version two"))], "two")?;
    repo.push("main")?;
    assert_eq!(push(&production, repo_id, &second_commit).await?, 202);
    let second = wait_for(&production, "demo", "the pushed release", |r| {
        r["commit"] == second_commit.as_str()
    })
    .await?;
    assert_eq!(second["state"], "live", "{second:#}");
    assert_eq!(second["trigger"], "push");
    assert_ne!(second["revision"], first["revision"]);
    assert_eq!(served(url).await?["revision"], second["revision"]);
    // Its build took its layers from the live image, by the digest the first build reported
    // (a tag in the apps' repository is anyone's to move).
    let cache = production
        .cloud_build
        .cache_of(second["build_id"].as_str().unwrap_or_default());
    let (_, first_digest) = first_image
        .split_once('@')
        .expect("the first image, by digest");
    assert_eq!(cache.as_deref(), Some(first_digest), "{second:#}");

    // A failing build is reported with its reason; the second revision keeps serving.
    production
        .cloud_build
        .fail_when_file_contains("requirements.txt", "runway-missing-package");
    let broken_commit = repo.commit(
        &[("requirements.txt", "streamlit\nrunway-missing-package\n")],
        "broken",
    )?;
    repo.push("main")?;
    assert_eq!(push(&production, repo_id, &broken_commit).await?, 202);
    let broken = wait_for(&production, "demo", "the broken release", |r| {
        r["commit"] == broken_commit.as_str()
    })
    .await?;
    assert_eq!(broken["state"], "failed", "{broken:#}");
    assert!(
        broken["message"]
            .as_str()
            .unwrap_or_default()
            .contains("build"),
        "{broken:#}"
    );
    assert_eq!(served(url).await?["revision"], second["revision"]);
    let (_, shown) = status(&production, "demo").await?;
    assert_eq!(shown["live_release"], second["id"], "{shown:#}");

    // Announced through the notifications topic: the signed webhook heard both releases go
    // live and the failure; Slack, which asked for failures only, heard the failure, with who
    // pushed and the console's link.
    let hooks = chat.wait_for(Service::Webhook, 3, WAIT).await;
    let events: Vec<(String, u64)> = hooks
        .iter()
        .map(|hook| {
            assert_eq!(
                hook.header("x-runway-signature-256"),
                Some(runway_core::notify::signature(HOOK_KEY.as_bytes(), &hook.body).as_str())
            );
            let event = hook.json();
            (
                event["event"].as_str().unwrap_or_default().to_owned(),
                event["seq"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    let seq = |release: &Value| release["seq"].as_u64().unwrap_or_default();
    for expected in [
        ("release.live".to_owned(), seq(&first)),
        ("release.live".to_owned(), seq(&second)),
        ("release.failed".to_owned(), seq(&broken)),
    ] {
        assert!(events.contains(&expected), "{expected:?} not in {events:?}");
    }
    let slack = chat.wait_for(Service::Slack, 1, WAIT).await;
    let said = slack[0].text();
    assert!(
        said.contains(&format!("demo release #{} failed", seq(&broken))),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "Commit <https://github.com/ada/demo/commit/{broken_commit}|{}>, pushed by",
            &broken_commit[..7]
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "<{}/apps/demo#release-{}|Release on Runway>",
            production.lb.url,
            seq(&broken)
        )),
        "{said}"
    );
    assert_eq!(
        chat.delivered(Service::Slack).len(),
        1,
        "Slack heard a success"
    );
    // The targets are replaced through the load balancer without a redeploy.
    let replaced = production
        .as_user(
            Method::PUT,
            "submit",
            "/api/deployments/demo/notifications",
            OWNER,
        )
        .json(&json!({ "notify": format!("slack {} success", chat.slack_url(SLACK_PATH)) }))
        .send()
        .await?;
    assert_eq!(replaced.status(), 200, "{}", replaced.text().await?);
    let (_, shown) = status(&production, "demo").await?;
    assert_eq!(shown["notify"][0]["host"], "127.0.0.1", "{shown:#}");
    assert_eq!(shown["notify"][0]["on_success"], true, "{shown:#}");
    assert_eq!(
        shown["notify"].as_array().map(Vec::len),
        Some(1),
        "{shown:#}"
    );

    // Each release is a GitHub deployment of its commit in the app's environment, whose status
    // followed it, linking to its row on the console; the first went inactive as the second
    // went live. A commit status (runway/demo) says the same on each commit.
    let deployments = production.github.deployments("ada", "demo");
    let console =
        |release: &Value| format!("{}/apps/demo#release-{}", production.lb.url, release["seq"]);
    let expected = [
        (
            &first,
            vec![
                "queued",
                "in_progress",
                "in_progress",
                "success",
                "inactive",
            ],
        ),
        (
            &second,
            vec!["queued", "in_progress", "in_progress", "success"],
        ),
        (&broken, vec!["queued", "in_progress", "failure"]),
    ];
    assert_eq!(deployments.len(), expected.len(), "{deployments:#?}");
    for (deployment, (release, states)) in deployments.iter().zip(expected) {
        assert_eq!(deployment.sha, release["commit"].as_str().unwrap());
        assert_eq!(deployment.environment, "demo");
        assert_eq!(deployment.payload["runway_release"], release["id"]);
        assert_eq!(deployment.states(), states, "{deployment:#?}");
        let reported = deployment
            .statuses
            .iter()
            .filter(|status| status.state != "inactive");
        for status in reported {
            assert_eq!(status.log_url.as_deref(), Some(console(release).as_str()));
        }
        let commit_states: Vec<String> = production
            .github
            .commit_statuses("ada", "demo")
            .into_iter()
            .filter(|status| status.sha == deployment.sha && status.context == "runway/demo")
            .map(|status| status.state)
            .collect();
        let last = match release["state"].as_str() {
            Some("live") => "success",
            _ => "failure",
        };
        assert_eq!(commit_states.last().map(String::as_str), Some(last));
    }
    let live = deployments[1].statuses.last().unwrap();
    assert_eq!(live.environment_url.as_deref(), Some(url));
    let failed = deployments[2].statuses.last().unwrap();
    assert!(
        failed.description.starts_with("build failure"),
        "{failed:?}"
    );

    // What happened so far, as the metrics sidecar scrapes it from each function's loopback
    // port: two releases built and live, one build failed; two pushes queued, one ping.
    let worker = production.metrics("worker").await?;
    for (series, value) in [
        ("runway_releases_total{state=\"live\"}", 2.0),
        ("runway_releases_total{state=\"failed\"}", 1.0),
        (
            "runway_build_duration_seconds_count{outcome=\"succeeded\"}",
            2.0,
        ),
        (
            "runway_build_duration_seconds_count{outcome=\"failed\"}",
            1.0,
        ),
        (
            "runway_deploy_duration_seconds_count{outcome=\"succeeded\"}",
            2.0,
        ),
        ("runway_release_duration_seconds_count", 2.0),
    ] {
        assert_eq!(
            runway_tests::metric(&worker, series),
            Some(value),
            "{series} in:\n{worker}"
        );
    }
    let webhook = production.metrics("github-webhook").await?;
    for (series, value) in [
        ("runway_deliveries_total{outcome=\"queued\"}", 2.0),
        ("runway_deliveries_total{outcome=\"ping\"}", 1.0),
    ] {
        assert_eq!(
            runway_tests::metric(&webhook, series),
            Some(value),
            "{series} in:\n{webhook}"
        );
    }
    // Never on the port the load balancer (and so the internet) reaches.
    let public = production
        .client
        .get(format!("{}/metrics", production.url("github-webhook")))
        .send()
        .await?;
    assert_eq!(public.status(), 404);

    // A rollback pins the traffic to the first revision: nothing is rebuilt.
    let builds_before = production.cloud_build.build_ids().len();
    let rolled = production
        .as_user(
            Method::POST,
            "submit",
            "/api/deployments/demo/rollback",
            OWNER,
        )
        .json(&json!({ "release_id": first["id"] }))
        .send()
        .await?;
    assert_eq!(rolled.status(), 202, "{}", rolled.text().await?);
    let rollback = wait_for(&production, "demo", "the rollback", |r| {
        r["trigger"] == "rollback"
    })
    .await?;
    assert_eq!(rollback["state"], "live", "{rollback:#}");
    assert_eq!(rollback["revision"], first["revision"]);
    assert_eq!(served(url).await?["revision"], first["revision"]);
    assert_eq!(production.cloud_build.build_ids().len(), builds_before);

    // The next push deploys a new revision and moves the traffic back to the latest. Its
    // build's last notification never arrives: cleanup's poll finds the build's end.
    production.cloud_build.drop_final_notification(true);
    let fixed_commit = repo.commit(&[("requirements.txt", "streamlit\n")], "fixed")?;
    repo.push("main")?;
    assert_eq!(push(&production, repo_id, &fixed_commit).await?, 202);
    let scheduler = format!(
        "runway-scheduler@{}.iam.gserviceaccount.com",
        production.project
    );
    let deadline = Instant::now() + WAIT;
    let fixed = loop {
        let (_, body) = status(&production, "demo").await?;
        let release = body["releases"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["commit"] == fixed_commit.as_str()))
            .cloned();
        if let Some(release) =
            release.filter(|r| matches!(r["state"].as_str(), Some("live" | "failed")))
        {
            break release;
        }
        assert!(Instant::now() < deadline, "{body:#}\n{}", production.logs());
        // Cloud Scheduler's call, as often as a test can wait for.
        let token = production
            .keys
            .oidc_token(production.url("cleanup"), &scheduler);
        production
            .client
            .post(format!("{}/cleanup/run", production.url("cleanup")))
            .bearer_auth(token)
            .send()
            .await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(fixed["state"], "live", "{fixed:#}");
    let serving = served(url).await?;
    assert_eq!(serving["revision"], fixed["revision"]);
    assert_ne!(fixed["revision"], first["revision"]);
    assert_ne!(fixed["revision"], second["revision"]);

    // Made private, the app sends anonymous viewers to sign in and lets in only those named.
    production.cloud_build.drop_final_notification(false);
    let update = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({
            "repo_url": "https://github.com/ada/demo",
            "main_file": "app.py",
            "app_name": "demo",
            "access": "private",
            "viewers": [OWNER],
        }))
        .send()
        .await?;
    assert_eq!(update.status(), 202, "{}", update.text().await?);
    let update: Value = update.json().await?;
    let private = wait_for(&production, "demo", "the private release", |r| {
        r["id"] == update["release_id"]
    })
    .await?;
    assert_eq!(private["state"], "live", "{private:#}");
    let token = |email: &str| production.keys.id_token(url, email);
    assert_eq!(status_for(url, None).await?, StatusCode::FOUND);
    assert_eq!(status_for(url, Some(&token(OWNER))).await?, StatusCode::OK);
    assert_eq!(
        status_for(url, Some(&token("eve@example.com"))).await?,
        StatusCode::FORBIDDEN
    );
    let (_, shown) = status(&production, "demo").await?;
    assert_eq!(
        shown["access"],
        json!({ "mode": "private", "viewers": [format!("user:{OWNER}")] }),
        "{shown:#}"
    );

    // The secret is in no Firestore document (read as an admin over the emulator's REST API).
    for collection in ["deployments", "releases", "deliveries", "audit"] {
        let documents = production
            .client
            .get(format!(
                "http://{}/v1/projects/{}/databases/(default)/documents/{collection}",
                runway_tests::emulators::firestore(),
                production.project
            ))
            .bearer_auth("owner")
            .send()
            .await?
            .text()
            .await?;
        assert!(
            documents.contains("\"documents\""),
            "{collection}: {documents:.300}"
        );
        assert!(!documents.contains(SECRET), "the secret is in {collection}");
    }

    // A redeploy that clears the build cache builds with no layers from the live image.
    let redeployed: Value = production
        .as_user(
            Method::POST,
            "submit",
            "/api/deployments/demo/redeploy",
            OWNER,
        )
        .json(&json!({ "clear_cache": true }))
        .send()
        .await?
        .json()
        .await?;
    let rebuilt_id = redeployed["release_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let rebuilt = wait_for(&production, "demo", "the redeploy", |r| {
        r["id"] == rebuilt_id.as_str()
    })
    .await?;
    assert_eq!(rebuilt["state"], "live", "{rebuilt:#}");
    assert_eq!(rebuilt["clear_cache"], true, "{rebuilt:#}");
    let build = rebuilt["build_id"].as_str().unwrap_or_default();
    assert!(production.cloud_build.build(build).is_some(), "{rebuilt:#}");
    assert_eq!(production.cloud_build.cache_of(build), None, "{rebuilt:#}");

    // Nor in any build's source: the image never carries it.
    let builds = production.cloud_build.build_ids();
    assert!(builds.len() >= 3, "{builds:?}");
    for build in builds {
        let paths = production.cloud_build.source_paths(&build);
        assert!(paths.iter().any(|p| p.ends_with("app.py")), "{paths:?}");
        for path in paths {
            let contents = production
                .cloud_build
                .source_file(&build, &path)
                .unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&contents).contains(SECRET),
                "the secret is in {path} of build {build}"
            );
        }
    }

    // Another user may not delete it; the owner may. Then nothing of it is left.
    let refused = production
        .as_user(
            Method::DELETE,
            "submit",
            "/api/deployments/demo",
            "eve@example.com",
        )
        .send()
        .await?;
    assert_eq!(refused.status(), 403);
    let deleted = production
        .as_user(Method::DELETE, "submit", "/api/deployments/demo", OWNER)
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.text().await?);
    let service_name = format!(
        "projects/{}/locations/europe-west1/services/demo",
        production.project
    );
    assert!(production.cloud_run.service(&service_name).is_none());
    assert!(production.github.hooks("ada", "demo").is_empty());
    let images = production.cloud_build.pushed_images();
    assert!(
        !images
            .iter()
            .any(|image| image.contains("/runway-apps/demo")),
        "the app's images outlive it: {images:?}"
    );
    let secret = reqwest::get(format!(
        "{}/v1/projects/{}/secrets/runway-app-demo",
        runway_tests::emulators::secret_manager(),
        production.project
    ))
    .await?;
    assert_eq!(secret.status(), 404, "the app's secret is deleted");
    let targets = reqwest::get(format!(
        "{}/v1/projects/{}/secrets/runway-notify-demo",
        runway_tests::emulators::secret_manager(),
        production.project
    ))
    .await?;
    assert_eq!(
        targets.status(),
        404,
        "the app's notification targets are deleted"
    );
    let accounts = production.cloud_run.service_accounts();
    assert!(
        !accounts.contains_key(&account),
        "the app's account outlives it: {accounts:?}"
    );
    assert_eq!(status(&production, "demo").await?.0, 404);

    // The admin sees the whole story in the audit trail; the secret is nowhere in the logs.
    let audit = demo_audit(&production).await?;
    let actions: Vec<&str> = audit.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"create"), "{audit:#?}");
    assert!(actions.contains(&"delete"), "{audit:#?}");
    let logs = production.logs();
    for secret in [SECRET, SLACK_PATH, HOOK_KEY] {
        assert!(!logs.contains(secret), "{secret} is in the logs");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_without_googles_tokens_are_refused() -> anyhow::Result<()> {
    let production = Production::start().await?;
    // Past the load balancer (on Cloud Run only IAP's agent may invoke them), submit and status
    // still take no request without IAP's assertion for their own backend service.
    let no_iap = production
        .client
        .get(format!("{}/api/apps", production.url("status")))
        .send()
        .await?;
    assert_eq!(no_iap.status(), 401);
    let others_assertion = production
        .client
        .get(format!("{}/api/apps", production.url("status")))
        .header(
            "x-goog-iap-jwt-assertion",
            production
                .keys
                .iap_assertion(&runway_tests::production::iap_audience("submit"), OWNER),
        )
        .send()
        .await?;
    assert_eq!(others_assertion.status(), 401);
    // Through the load balancer, IAP answers a script without a token, or with one for
    // another audience, 401, and a signed-in person outside iap_members 403; a browser without
    // its session is sent to Google's sign-in.
    let xhr = production
        .client
        .get(format!("{}/api/apps", production.lb.url))
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await?;
    assert_eq!(xhr.status(), 401);
    let stranger = production
        .client
        .get(format!("{}/api/apps", production.lb.url))
        .bearer_auth(production.lb.id_token("mallory@elsewhere.example"))
        .send()
        .await?;
    assert_eq!(stranger.status(), 403);
    let wrong_audience = production
        .client
        .post(format!("{}/api/deployments", production.lb.url))
        .bearer_auth(production.keys.id_token("https://elsewhere.example", OWNER))
        .send()
        .await?;
    assert_eq!(wrong_audience.status(), 401);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(format!("{}/apps/demo", production.lb.url))
        .send()
        .await?;
    assert_eq!(browser.status(), 302);
    assert!(
        browser.headers()["location"]
            .to_str()?
            .contains("/o/oauth2/v2/auth?client_id="),
        "{:?}",
        browser.headers()
    );
    // A forged assertion sent through the load balancer is dropped, not passed on.
    let forged = production
        .client
        .get(format!("{}/api/apps", production.lb.url))
        .header(
            "x-goog-iap-jwt-assertion",
            production
                .keys
                .iap_assertion(&runway_tests::production::iap_audience("status"), OWNER),
        )
        .header("x-requested-with", "XMLHttpRequest")
        .send()
        .await?;
    assert_eq!(forged.status(), 401);
    let no_oidc = production
        .client
        .post(format!("{}/cleanup/run", production.url("cleanup")))
        .send()
        .await?;
    assert_eq!(no_oidc.status(), 401);
    // Scheduler's token for cleanup's audience runs a sweep.
    let token = production.keys.oidc_token(
        production.url("cleanup"),
        &format!(
            "runway-scheduler@{}.iam.gserviceaccount.com",
            production.project
        ),
    );
    let swept = production
        .client
        .post(format!("{}/cleanup/run", production.url("cleanup")))
        .bearer_auth(token)
        .send()
        .await?;
    assert_eq!(swept.status(), 200, "{}", swept.text().await?);
    // Readiness names each dependency.
    let ready: Value = production
        .client
        .get(format!("{}/ready", production.url("submit")))
        .send()
        .await?
        .json()
        .await?;
    for dependency in ["firestore", "pubsub", "secret-manager"] {
        assert_eq!(
            ready["dependencies"][dependency]["state"], "ok",
            "{ready:#}"
        );
    }
    Ok(())
}

/// The ping GitHub sent hook `hook_id`, once its receiver has answered (GitHub waits 10 s).
async fn pinged(production: &Production, hook_id: u64) -> anyhow::Result<FakeDelivery> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let deliveries = production.github.deliveries();
        let ping = deliveries
            .iter()
            .find(|d| d.event == "ping" && d.hook_id == hook_id);
        if let Some(ping) = ping {
            return Ok(ping.clone());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "GitHub made no ping to hook {hook_id}: {deliveries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two pushes whose deploys overlap. The newer one's Cloud Run operation is still running when
/// the older one's build ends (its notification was lost; cleanup's poll finds it), so the
/// older deploy starts last. It must stand aside: the newer one serves its own revision, the
/// store says so, and the older one is recorded as superseded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_older_push_that_deploys_last_never_replaces_a_newer_one() -> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let (repo, repo_id) = production.demo_repo(dir.path())?;
    let submitted = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({
            "repo_url": "https://github.com/ada/demo",
            "main_file": "app.py",
            "app_name": "demo",
        }))
        .send()
        .await?;
    assert_eq!(submitted.status(), 202);
    let submitted: Value = submitted.json().await?;
    let first = wait_for(&production, "demo", "the first release", |r| {
        r["id"] == submitted["release_id"]
    })
    .await?;
    assert_eq!(first["state"], "live", "{first:#}");
    let name = format!(
        "projects/{}/locations/europe-west1/services/demo",
        production.project
    );
    let deadline = Instant::now() + WAIT;
    let release_of = |commit: &str| {
        let commit = commit.to_owned();
        let production = &production;
        async move {
            let (_, body) = status(production, "demo").await?;
            anyhow::Ok(
                body["releases"]
                    .as_array()
                    .and_then(|all| all.iter().find(|r| r["commit"] == commit.as_str()))
                    .cloned(),
            )
        }
    };

    // The older push builds, but the news of its build's end is lost.
    production.cloud_build.drop_final_notification(true);
    let older_commit = repo.commit(&[("app.py", &streamlit_app("Version two"))], "two")?;
    repo.push("main")?;
    assert_eq!(push(&production, repo_id, &older_commit).await?, 202);
    let ended = |build: Option<Value>| {
        build.is_some_and(|b| !matches!(b["status"].as_str(), Some("QUEUED" | "WORKING")))
    };
    while production.cloud_build.build_ids().len() < 2
        || !production
            .cloud_build
            .build_ids()
            .iter()
            .all(|id| ended(production.cloud_build.build(id)))
    {
        assert!(Instant::now() < deadline, "{}", production.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    production.cloud_build.drop_final_notification(false);

    // The newer push builds and deploys; Cloud Run's operation is latched.
    production.cloud_run.hold_next_patch();
    let newer_commit = repo.commit(&[("app.py", &streamlit_app("Version three"))], "three")?;
    repo.push("main")?;
    assert_eq!(push(&production, repo_id, &newer_commit).await?, 202);
    while production.cloud_run.revisions(&name).len() < 2 {
        assert!(Instant::now() < deadline, "{}", production.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cleanup's poll finds the older build's end: its deploy starts now, after the newer one.
    let scheduler = format!(
        "runway-scheduler@{}.iam.gserviceaccount.com",
        production.project
    );
    let older = loop {
        let token = production
            .keys
            .oidc_token(production.url("cleanup"), &scheduler);
        production
            .client
            .post(format!("{}/cleanup/run", production.url("cleanup")))
            .bearer_auth(token)
            .send()
            .await?;
        if let Some(older) = release_of(&older_commit)
            .await?
            .filter(|r| !matches!(r["state"].as_str(), Some("building" | "queued")))
        {
            break older;
        }
        assert!(Instant::now() < deadline, "{}", production.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    production.cloud_run.release_held();
    let newer = wait_for(&production, "demo", "the newer push", |r| {
        r["commit"] == newer_commit.as_str()
    })
    .await?;
    assert_eq!(newer["state"], "live", "{newer:#}");
    let older = loop {
        let older = release_of(&older_commit).await?.unwrap_or(older.clone());
        if older["state"] != "deploying" {
            break older;
        }
        assert!(
            Instant::now() < deadline,
            "{older:#}\n{}",
            production.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(older["state"], "superseded", "{older:#}");

    let (_, shown) = status(&production, "demo").await?;
    assert_eq!(shown["live_release"], newer["id"], "{shown:#}");
    let service = production.cloud_run.service(&name).expect("the service");
    let serving = served(service["uri"].as_str().unwrap_or_default()).await?;
    assert_eq!(serving["revision"], newer["revision"]);
    let revision = production
        .cloud_run
        .revisions(&name)
        .into_iter()
        .find(|r| serving["revision"] == r.name.as_str())
        .expect("the serving revision");
    assert_eq!(
        revision.template["annotations"]["runway/release-id"], newer["id"],
        "the revision serving runs the newer release"
    );
    Ok(())
}

/// The operator's check after `terraform apply` (`scripts/smoke-cloud`), run against this
/// topology behind IAP with a script's identity token: it deploys the bundled example, opens
/// it, deletes it and leaves nothing behind; without a valid token it fails saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_smoke_check_deploys_opens_and_deletes_the_example_through_iap() -> anyhow::Result<()> {
    let production = Production::start().await?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let example = |file: &str| std::fs::read_to_string(root.join("examples/hello").join(file));
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("streamlit_app.py", &example("streamlit_app.py")?),
            ("requirements.txt", &example("requirements.txt")?),
        ],
    )?;
    production.github.add_repo("ada", "hello", &repo.bare);
    let smoke = |token: String| {
        tokio::process::Command::new(root.join("scripts/smoke-cloud"))
            .args([&production.lb.url, "--repo", "https://github.com/ada/hello"])
            .args(["--app", "smoke-test", "--poll", "0.2", "--timeout", "90"])
            .env("RUNWAY_ID_TOKEN", token)
            .output()
    };

    let token = production.keys.id_token(IAP_CLIENT_ID, OWNER);
    let run = smoke(token.clone()).await?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "{stdout}\n{stderr}\n{}",
        production.logs()
    );
    for step in [
        "identity token",
        "submit",
        "live",
        "open as viewer",
        "delete",
        "all",
    ] {
        let line = stdout
            .lines()
            .find(|line| line.starts_with(&format!("ok   {step} ")))
            .unwrap_or_else(|| panic!("no line for {step}: {stdout}"));
        let timed = line
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|pair| pair[0].parse::<f64>().is_ok() && pair[1] == "s");
        assert!(timed, "the step has its time: {line}");
    }
    assert!(
        stdout.contains("answers 200 to an anonymous viewer"),
        "{stdout}"
    );
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    assert!(production.github.hooks("ada", "hello").is_empty());
    let service = format!(
        "projects/{}/locations/europe-west1/services/smoke-test",
        production.project
    );
    assert!(production.cloud_run.service(&service).is_none());

    let wrong_audience = production.keys.id_token("https://elsewhere.example", OWNER);
    let refused = smoke(wrong_audience).await?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("audience"), "{stderr}");
    Ok(())
}

/// An app deleted after the worker read it and before its deploy reached Cloud Run: the deploy
/// creates the service anew (an upsert), and it must not serve on with no record and no owner.
/// The worker is latched at the app's service account, its first call on the platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_deleted_while_its_release_deploys_leaves_no_service_behind() -> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("app.py", &streamlit_app("Doomed"))])?;
    production.github.add_repo("ada", "doomed", &repo.bare);
    production.cloud_run.hold_next_account_create();

    let submitted = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({
            "repo_url": "https://github.com/ada/doomed",
            "main_file": "app.py",
            "app_name": "doomed",
        }))
        .send()
        .await?;
    assert_eq!(submitted.status(), 202, "{}", submitted.text().await?);
    let deadline = Instant::now() + WAIT;
    while !production.cloud_run.account_create_waiting() {
        assert!(Instant::now() < deadline, "{}", production.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted = production
        .as_user(Method::DELETE, "submit", "/api/deployments/doomed", OWNER)
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.text().await?);
    production.cloud_run.release_account_create();

    // The worker's deploy goes on, finds the app gone when it records it, and removes it.
    let name = format!(
        "projects/{}/locations/europe-west1/services/doomed",
        production.project
    );
    let account = format!(
        "runway-a-doomed@{}.iam.gserviceaccount.com",
        production.project
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let logs = production.logs();
        // Done one way or the other: removed, or (before the fix) not recorded and left.
        if ["was deleted while", "not marked live", "no longer exists"]
            .iter()
            .any(|end| logs.contains(end))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never finished:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        production.cloud_run.service(&name).is_none(),
        "a service serves an app that no longer exists\n{}",
        production.logs()
    );
    assert!(
        !production
            .cloud_run
            .service_accounts()
            .contains_key(&account)
    );
    Ok(())
}

/// Runway's GitHub credential reads more than any one user should deploy: a repository outside
/// the operator's list is refused before GitHub is asked anything, with the same answer whether
/// it exists or not, and nothing is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repository_outside_the_allowed_list_is_refused_and_nothing_is_made() -> anyhow::Result<()>
{
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("app.py", &streamlit_app("Secret work"))])?;
    // The credential can read it, and hook it: the installation's list must stop it.
    production
        .github
        .add_repo("other-org", "payroll", &repo.bare);
    let mut answers = Vec::new();
    for url in [
        "https://github.com/other-org/payroll",
        "https://github.com/other-org/no-such-repository",
    ] {
        let refused = production
            .as_user(Method::POST, "submit", "/api/deployments", OWNER)
            .json(&json!({ "repo_url": url, "main_file": "app.py", "app_name": "payroll" }))
            .send()
            .await?;
        assert_eq!(refused.status(), 400);
        let answer: Value = refused.json().await?;
        assert_eq!(answer["field"], "repo_url", "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains("ada/*"),
            "{answer}"
        );
        answers.push(answer);
    }
    assert_eq!(
        answers[0], answers[1],
        "the answer tells one repository from another"
    );
    assert!(production.github.hooks("other-org", "payroll").is_empty());
    assert_eq!(status(&production, "payroll").await?.0, 404);
    Ok(())
}

/// Any build in the project may carry a release's tag and announce any image on `cloud-builds`.
/// Only the build the release started counts, and its image is what Cloud Build says it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_build_notification_does_not_choose_what_an_app_runs() -> anyhow::Result<()> {
    use base64::Engine;
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("app.py", &streamlit_app("Ledger"))])?;
    production.github.add_repo("ada", "ledger", &repo.bare);
    production
        .cloud_build
        .set_build_duration(Duration::from_secs(4));
    let submitted = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({
            "repo_url": "https://github.com/ada/ledger", "main_file": "app.py", "app_name": "ledger",
        }))
        .send()
        .await?;
    assert_eq!(submitted.status(), 202, "{}", submitted.text().await?);
    let release_id = submitted.json::<Value>().await?["release_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = status(&production, "ledger").await?;
        let latest = &body["latest_release"];
        if latest["state"] == "building" && latest["build_id"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "{body:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Someone's build, tagged as the release's, announces an image of its own.
    let evil = format!(
        "europe-west1-docker.pkg.dev/{}/runway-apps/ledger@sha256:{}",
        production.project,
        "e".repeat(64)
    );
    let forged = json!({
        "id": "forged-0000-0000-0000-000000000001",
        "status": "SUCCESS",
        "tags": ["runway", "app-ledger", format!("release-{release_id}")],
        "results": { "images": [{
            "name": format!("europe-west1-docker.pkg.dev/{}/runway-apps/ledger:x", production.project),
            "digest": format!("sha256:{}", "e".repeat(64)),
        }] },
    });
    let published = production
        .client
        .post(format!(
            "{}/v1/projects/{}/topics/cloud-builds:publish",
            runway_tests::emulators::pubsub(),
            production.project
        ))
        .json(&json!({ "messages": [{
            "data": base64::engine::general_purpose::STANDARD.encode(forged.to_string()),
            "attributes": { "buildId": forged["id"], "status": "SUCCESS" },
        }] }))
        .send()
        .await?;
    assert!(published.status().is_success());

    let live = wait_for(&production, "ledger", "the release", |r| {
        r["id"] == release_id.as_str()
    })
    .await?;
    assert_eq!(live["state"], "live", "{live:#}\n{}", production.logs());
    let served = served(live["url"].as_str().unwrap_or_default()).await?;
    assert_ne!(served["image"], evil.as_str(), "{served:#}");
    assert!(
        production.logs().contains("is not release"),
        "the forged notification was not seen and refused\n{}",
        production.logs()
    );
    Ok(())
}

/// Two secrets updates whose releases fail leave the live revision reading the version it
/// mounts: no update disables a version a release deployed with.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_secrets_updates_never_disable_the_version_the_live_revision_mounts()
-> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("app.py", &streamlit_app("Vault"))])?;
    production.github.add_repo("ada", "vault", &repo.bare);
    let submit = |secrets: &str| {
        production
            .as_user(Method::POST, "submit", "/api/deployments", OWNER)
            .json(&json!({
                "repo_url": "https://github.com/ada/vault", "main_file": "app.py",
                "app_name": "vault", "secrets": secrets,
            }))
            .send()
    };
    let first = submit("token = \"one\"").await?;
    assert_eq!(first.status(), 202, "{}", first.text().await?);
    let first_id = first.json::<Value>().await?["release_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let live = wait_for(&production, "vault", "the first release", |r| {
        r["id"] == first_id.as_str()
    })
    .await?;
    assert_eq!(live["state"], "live", "{live:#}");

    // The next builds fail: two secrets updates in a row never go live.
    production
        .cloud_build
        .fail_when_file_contains("app.py", "Vault");
    for secrets in ["token = \"two\"", "token = \"three\""] {
        let update = submit(secrets).await?;
        assert_eq!(update.status(), 202, "{}", update.text().await?);
        let id = update.json::<Value>().await?["release_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let failed = wait_for(&production, "vault", "the update", |r| {
            r["id"] == id.as_str()
        })
        .await?;
        assert_eq!(failed["state"], "failed", "{failed:#}");
    }

    let service = production
        .cloud_run
        .service(&format!(
            "projects/{}/locations/europe-west1/services/vault",
            production.project
        ))
        .expect("the service");
    let mounted = &service["template"]["volumes"][0]["secret"]["items"][0]["version"];
    assert_eq!(mounted, "1", "{service:#}");
    let version = reqwest::get(format!(
        "{}/v1/projects/{}/secrets/runway-app-vault/versions/1",
        runway_tests::emulators::secret_manager(),
        production.project
    ))
    .await?
    .json::<Value>()
    .await?;
    assert_eq!(version["state"], "ENABLED", "{version:#}");
    assert_eq!(
        served(live["url"].as_str().unwrap_or_default()).await?["revision"],
        live["revision"]
    );
    Ok(())
}

/// A region change moves the app: the release goes live in the new region, the old region's
/// service is removed, and the app's URL is the new one. Until the new one is live the old one
/// serves (a move whose deploy fails leaves it where it was).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_moved_to_another_region_serves_there_and_leaves_nothing_behind()
-> anyhow::Result<()> {
    moves_and_leaves_nothing_behind(false).await
}

/// The same for an app whose live release went live before releases recorded their region
/// (its record has none): the worker cannot know where it ran, so it removes the app's
/// services from every other region Runway deploys to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_whose_live_release_predates_regions_moves_and_leaves_nothing_behind()
-> anyhow::Result<()> {
    moves_and_leaves_nothing_behind(true).await
}

/// Removes `region` from the release's record in Firestore, as a release recorded by a Runway
/// from before releases kept their region.
async fn forget_region(production: &Production, release: &str) -> anyhow::Result<()> {
    let document = format!(
        "http://{}/v1/projects/{}/databases/(default)/documents/releases/{release}",
        runway_tests::emulators::firestore(),
        production.project
    );
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(&document)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut record: Value = serde_json::from_str(
        doc["fields"]["record"]["stringValue"]
            .as_str()
            .unwrap_or("{}"),
    )?;
    anyhow::ensure!(record["region"] == REGION, "{record}");
    record.as_object_mut().expect("a record").remove("region");
    http.patch(format!("{document}?updateMask.fieldPaths=record"))
        .json(&json!({ "fields": { "record": { "stringValue": record.to_string() } } }))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn moves_and_leaves_nothing_behind(legacy: bool) -> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let (_repo, _) = production.demo_repo(dir.path())?;
    let service = |region: &str| {
        production.cloud_run.service(&format!(
            "projects/{}/locations/{region}/services/demo",
            production.project
        ))
    };
    let submit = |region: &'static str| {
        production
            .as_user(Method::POST, "submit", "/api/deployments", OWNER)
            .json(&json!({
                "repo_url": "https://github.com/ada/demo",
                "main_file": "app.py",
                "app_name": "demo",
                "region": region,
            }))
            .send()
    };
    let submitted: Value = submit(REGION).await?.json().await?;
    let first_id = submitted["release_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let first = wait_for(&production, "demo", "the first release", |r| {
        r["id"] == first_id.as_str()
    })
    .await?;
    assert_eq!(first["state"], "live", "{first:#}");
    assert_eq!(first["region"], REGION, "{first:#}");
    assert!(service(REGION).is_some());
    if legacy {
        forget_region(&production, &first_id).await?;
        let (_, shown) = status(&production, "demo").await?;
        assert_eq!(shown["releases"][0]["region"], Value::Null, "{shown:#}");
    }

    let moved: Value = submit(OTHER_REGION).await?.json().await?;
    let moved_id = moved["release_id"].as_str().unwrap_or_default().to_owned();
    let release = wait_for(&production, "demo", "the move", |r| {
        r["id"] == moved_id.as_str()
    })
    .await?;
    assert_eq!(
        release["state"],
        "live",
        "{release:#}\n{}",
        production.logs()
    );
    assert_eq!(release["region"], OTHER_REGION, "{release:#}");
    let there = service(OTHER_REGION).expect("the service in the new region");
    assert!(
        service(REGION).is_none(),
        "the old region's service still runs"
    );
    let (_, shown) = status(&production, "demo").await?;
    assert_eq!(shown["region"], OTHER_REGION, "{shown:#}");
    assert_eq!(shown["url"], there["uri"], "{shown:#}");
    assert_eq!(
        served(there["uri"].as_str().unwrap()).await?["revision"],
        release["revision"]
    );
    Ok(())
}

/// The demo app's audit trail as the admin reads it, newest first.
async fn demo_audit(production: &Production) -> anyhow::Result<Vec<Value>> {
    let audit: Value = production
        .as_user(Method::GET, "status", "/api/audit?app=demo", ADMIN)
        .send()
        .await?
        .json()
        .await?;
    Ok(audit["entries"].as_array().cloned().unwrap_or_default())
}

/// Cloud Scheduler's call to cleanup; the sweep's report.
async fn sweep(production: &Production) -> anyhow::Result<Value> {
    Ok(production.sweep().await?.1)
}

/// Someone edits the app's hook on GitHub, changes its secret, deletes it: each time the next
/// sweep sets it right (the secret from the deliveries GitHub logged as refused), the app's
/// status shows what was wrong and the failed deliveries, and pushes reach Runway again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apps_hook_is_set_right_after_someone_edits_or_deletes_it() -> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let (repo, _) = production.demo_repo(dir.path())?;
    let submitted = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({ "repo_url": "https://github.com/ada/demo", "main_file": "app.py", "app_name": "demo" }))
        .send()
        .await?;
    assert_eq!(submitted.status(), 202);
    let hook = || {
        production
            .github
            .hooks("ada", "demo")
            .into_iter()
            .next()
            .expect("a hook")
    };
    let first = hook();
    let head = repo.commit(&[("notes.md", "one")], "one")?;
    repo.push("main")?;
    let zero = "0".repeat(40);
    // Past the grace period a new app's hook gets.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Switched off and sent other events: set back.
    production
        .github
        .edit_hook("ada", "demo", first.id, |hook| {
            hook.active = false;
            hook.events = vec!["issues".into()];
        });
    let report = sweep(&production).await?;
    assert_eq!(
        report["hooks_repaired"],
        1,
        "{report:#}\n{}",
        production.logs()
    );
    let set_back = hook();
    assert_eq!(set_back.id, first.id);
    assert!(set_back.active);
    assert_eq!(set_back.events, ["pull_request", "push"]);
    let (_, shown) = status(&production, "demo").await?;
    let repaired = shown["hook"]["repaired"][1]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        repaired.contains("switched off") && repaired.contains("issues"),
        "{shown:#}"
    );
    // Nothing wrong: nothing done.
    let report = sweep(&production).await?;
    assert_eq!(report["hooks_repaired"], 0, "{report:#}");

    // Its secret changed: GitHub's push is refused (401) and logged so; the sweep reads that and
    // sets the secret again, and the next push is taken.
    production
        .github
        .edit_hook("ada", "demo", first.id, |hook| {
            hook.secret = Some("someone-elses".into())
        });
    let refused = production
        .github
        .push("ada", "demo", "main", &zero, &head)
        .await;
    assert_eq!(refused[0].status, Some(401), "{refused:?}");
    let report = sweep(&production).await?;
    assert_eq!(report["hooks_repaired"], 1, "{report:#}");
    let (_, shown) = status(&production, "demo").await?;
    assert!(
        shown["hook"]["repaired"][1]
            .as_str()
            .unwrap_or_default()
            .contains("secret was changed"),
        "{shown:#}"
    );
    let failed = shown["hook"]["failed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed[0]["status_code"], 401, "{shown:#}");
    assert_eq!(
        failed[0]["status"], "Invalid HTTP Response: 401",
        "{shown:#}"
    );
    assert_eq!(failed[0]["guid"], refused[0].guid.as_str());
    let taken = production
        .github
        .push("ada", "demo", "main", &zero, &head)
        .await;
    assert!(
        taken[0]
            .status
            .is_some_and(|code| (200..300).contains(&code)),
        "{taken:?}"
    );
    // The same refused delivery is not answered twice (GitHub dates deliveries to the second,
    // so a time would not tell a refusal just before a repair from one just after).
    let report = sweep(&production).await?;
    assert_eq!(report["hooks_repaired"], 0, "{report:#}");

    // Deleted: made again, and the app's record points at the new one, so deleting the app
    // removes it.
    production.github.remove_hook("ada", "demo", first.id);
    let report = sweep(&production).await?;
    assert_eq!(report["hooks_repaired"], 1, "{report:#}");
    let again = hook();
    assert_ne!(again.id, first.id);
    assert_eq!(again.url, first.url);
    assert_eq!(again.events, ["pull_request", "push"]);
    let taken = production
        .github
        .push("ada", "demo", "main", &zero, &head)
        .await;
    assert!(
        taken[0]
            .status
            .is_some_and(|code| (200..300).contains(&code)),
        "{taken:?}"
    );
    let audit = demo_audit(&production).await?;
    let repairs = audit
        .iter()
        .filter(|entry| entry["action"] == "hook-repaired")
        .count();
    assert_eq!(repairs, 3, "{audit:#?}");
    let deleted = production
        .as_user(Method::DELETE, "submit", "/api/deployments/demo", OWNER)
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.text().await?);
    assert!(production.github.hooks("ada", "demo").is_empty());
    Ok(())
}

/// The owner deletes the app's repository on GitHub: the next sweep flags the app on its page
/// and in its JSON, and once the grace period has passed the next removes the app with its
/// service, secrets, hook and records, and says so in the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_whose_repository_was_deleted_is_flagged_then_removed() -> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    production.demo_repo(dir.path())?;
    let submitted = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({
            "repo_url": "https://github.com/ada/demo", "main_file": "app.py", "app_name": "demo",
            "secrets": "token = \"t\"\n",
        }))
        .send()
        .await?;
    assert_eq!(submitted.status(), 202);
    let live = wait_for(&production, "demo", "the first release", |_| true).await?;
    assert_eq!(live["state"], "live", "{live:#}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = sweep(&production).await?;
    assert_eq!(report["apps_removed"], 0, "{report:#}");

    production.github.delete_repo("ada", "demo");
    let report = sweep(&production).await?;
    assert_eq!(report["apps_removed"], 0, "{report:#}");
    let (_, shown) = status(&production, "demo").await?;
    assert!(shown["hook"]["repo_gone_since"].is_string(), "{shown:#}");
    let page = production
        .as_user(Method::GET, "status", "/apps/demo", OWNER)
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("id=\"repo-gone\""), "{page}");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let report = sweep(&production).await?;
    assert_eq!(
        report["apps_removed"],
        1,
        "{report:#}\n{}",
        production.logs()
    );
    assert_eq!(status(&production, "demo").await?.0, 404);
    let service = format!(
        "projects/{}/locations/europe-west1/services/demo",
        production.project
    );
    assert!(production.cloud_run.service(&service).is_none());
    let secret = reqwest::get(format!(
        "{}/v1/projects/{}/secrets/runway-app-demo",
        runway_tests::emulators::secret_manager(),
        production.project
    ))
    .await?;
    assert_eq!(secret.status(), 404, "the app's secret is deleted");
    let audit = demo_audit(&production).await?;
    let removed = audit.iter().find(|entry| entry["action"] == "app-removed");
    let detail = removed
        .map(|entry| entry["detail"].to_string())
        .unwrap_or_default();
    assert!(detail.contains("github.com/ada/demo"), "{audit:#?}");
    Ok(())
}

/// A pull request's preview in the production topology: GitHub delivers `pull_request` to the
/// app's hook, the worker builds the pull request's head on Cloud Build and runs it on Cloud
/// Run with none of the app's secrets, and GitHub shows it as a deployment in the preview's
/// environment and in one comment on the pull request, edited as the preview moves. A fork's
/// pull request is not previewed; closing the pull request removes the preview's service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_request_gets_a_preview_on_the_cloud_adapters() -> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let (repo, _) = production.demo_repo(dir.path())?;
    let submitted = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({
            "repo_url": "https://github.com/ada/demo", "main_file": "app.py", "app_name": "demo",
            "secrets": format!("token = \"{SECRET}\"\n"), "previews": "on",
            "preview_secrets": "public_key = \"pk-preview\"\n",
        }))
        .send()
        .await?;
    assert_eq!(submitted.status(), 202);
    let live = wait_for(&production, "demo", "the first release", |_| true).await?;
    assert_eq!(live["state"], "live", "{live:#}");

    runway_tests::git(&repo.work, &["checkout", "-q", "-b", "feature"])?;
    let head = repo.commit(&[("app.py", &streamlit_app("Version two"))], "two")?;
    repo.push("feature")?;
    let number = production
        .github
        .open_pull("ada", "demo", "feature", "Try version two", None)
        .await?;
    let preview = format!("demo--pr{number}");
    let built = wait_for(&production, &preview, "the preview", |r| {
        r["commit"] == head
    })
    .await?;
    assert_eq!(built["state"], "live", "{built:#}\n{}", production.logs());
    assert_eq!(built["trigger"], "preview");
    let url = built["url"].as_str().unwrap_or_default().to_owned();
    assert_eq!(served(&url).await?["revision"], built["revision"]);
    let service = production.cloud_run.service(&format!(
        "projects/{}/locations/{REGION}/services/{preview}",
        production.project
    ));
    let service = service.expect("the preview's service");
    let mounted = service["template"]["volumes"][0]["secret"]["secret"].clone();
    assert_eq!(
        mounted, "runway-app-demo--previews",
        "a preview mounts its app's secrets for previews, never the app's own: {service:#}"
    );

    // GitHub shows it (once the release is live: feedback follows the step): a deployment in
    // its own environment, and a comment on the pull request.
    let shown = eventually("the preview's deployment, succeeded", || {
        let deployments = production.github.deployments("ada", "demo");
        deployments.into_iter().find(|d| {
            d.environment == preview && d.states().last().map(String::as_str) == Some("success")
        })
    })
    .await?;
    assert_eq!(shown.sha, head);
    let live_comment = format!("**live** at {url}");
    let comments = eventually("the comment", || {
        let comments = production.github.comments("ada", "demo", number);
        comments
            .iter()
            .any(|c| c.body.contains(&live_comment))
            .then_some(comments)
    })
    .await?;
    assert_eq!(comments.len(), 1, "{comments:#?}");

    // A push to the pull request: rebuilt, and the same comment edited.
    let second = repo.commit(&[("app.py", &streamlit_app("Version three"))], "three")?;
    repo.push("feature")?;
    production
        .github
        .push_to_pull("ada", "demo", number)
        .await?;
    let rebuilt = wait_for(&production, &preview, "the pushed preview", |r| {
        r["commit"] == second
    })
    .await?;
    assert_eq!(rebuilt["state"], "live", "{rebuilt:#}");
    let comments = eventually("the comment edited", || {
        let comments = production.github.comments("ada", "demo", number);
        comments.iter().any(|c| c.edits >= 1).then_some(comments)
    })
    .await?;
    assert_eq!(comments.len(), 1, "{comments:#?}");
    // The app itself still serves its own branch.
    let (_, app) = status(&production, "demo").await?;
    assert_eq!(app["live_release"], live["id"], "{app:#}");
    assert_eq!(app["open_previews"][0]["app"], preview, "{app:#}");

    // A fork's pull request is not previewed: its code is anyone's.
    let forked = production
        .github
        .open_pull(
            "ada",
            "demo",
            "feature",
            "From a fork",
            Some(("mallory/demo", 4242)),
        )
        .await?;
    assert_eq!(
        status(&production, &format!("demo--pr{forked}")).await?.0,
        404
    );
    let (_, app) = status(&production, "demo").await?;
    let refused = app["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["git_ref"] == format!("refs/pull/{forked}/head"))
        .cloned()
        .unwrap_or_default();
    assert!(
        refused["outcome"]
            .as_str()
            .unwrap_or_default()
            .contains("comes from the fork mallory/demo"),
        "{app:#}"
    );

    // Closing the pull request removes the preview: its service, its records.
    production
        .github
        .close_pull("ada", "demo", number, true)
        .await?;
    let deadline = Instant::now() + WAIT;
    let name = format!(
        "projects/{}/locations/{REGION}/services/{preview}",
        production.project
    );
    while status(&production, &preview).await?.0 != 404
        || production.cloud_run.service(&name).is_some()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the preview stays:\n{}",
            production.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let comments = production.github.comments("ada", "demo", number);
    assert!(comments[0].body.contains("was removed"), "{comments:#?}");

    // A synchronize GitHub sent before the close arrives only now: the pull request is closed,
    // so its preview is removed again rather than built.
    production
        .github
        .deliver_late("ada", "demo", number, "synchronize")
        .await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, late) = status(&production, &preview).await?;
        let settled = code == 404 && production.cloud_run.service(&name).is_none();
        if settled && production.unacknowledged().is_empty() {
            break;
        }
        let went_live = late["releases"]
            .as_array()
            .is_some_and(|all| all.iter().any(|r| r["state"] == "live"));
        assert!(
            !went_live,
            "a closed pull request's preview went live: {late:#}"
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "the late preview stays: {late:#}\n{}",
            production.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Through all of it the app served its own release.
    let app_url = live["url"].as_str().unwrap_or_default().to_owned();
    assert_eq!(served(&app_url).await?["revision"], live["revision"]);

    // Deleting the app takes its open pull requests' previews and their secrets with it.
    let again = production
        .github
        .open_pull("ada", "demo", "feature", "Once more", None)
        .await?;
    let open = format!("demo--pr{again}");
    let built = wait_for(&production, &open, "the second preview", |_| true).await?;
    assert_eq!(built["state"], "live", "{built:#}");
    let deleted = production
        .as_user(Method::DELETE, "submit", "/api/deployments/demo", OWNER)
        .send()
        .await?;
    assert_eq!(deleted.status(), 200);
    for app in ["demo", open.as_str()] {
        assert_eq!(status(&production, app).await?.0, 404, "{app}");
        let service = format!(
            "projects/{}/locations/{REGION}/services/{app}",
            production.project
        );
        assert!(production.cloud_run.service(&service).is_none(), "{app}");
    }
    let secret = reqwest::get(format!(
        "{}/v1/projects/{}/secrets/runway-app-demo--previews",
        runway_tests::emulators::secret_manager(),
        production.project
    ))
    .await?;
    assert_eq!(secret.status(), 404, "the previews' secrets are deleted");
    assert_eq!(
        production
            .github
            .deployments("ada", "demo")
            .iter()
            .find(|d| d.environment == preview)
            .and_then(|d| d.states().last().cloned())
            .as_deref(),
        Some("inactive")
    );
    Ok(())
}

/// Waits until `found` finds something, and returns it: what GitHub shows of a release (its
/// deployment, a comment) follows the release's own step.
async fn eventually<T>(what: &str, found: impl Fn() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = found() {
            return Ok(found);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not seen in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Without the GitHub App's "Pull requests" permission a preview cannot learn its pull
/// request's head: its release fails saying what to grant, rather than retrying forever or
/// building a head that may be stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preview_runway_may_not_read_fails_saying_which_permission_is_missing()
-> anyhow::Result<()> {
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let (repo, _) = production.demo_repo(dir.path())?;
    let submitted = production
        .as_user(Method::POST, "submit", "/api/deployments", OWNER)
        .json(&json!({
            "repo_url": "https://github.com/ada/demo", "main_file": "app.py", "app_name": "demo",
            "previews": "on",
        }))
        .send()
        .await?;
    assert_eq!(submitted.status(), 202);
    wait_for(&production, "demo", "the first release", |_| true).await?;
    runway_tests::git(&repo.work, &["checkout", "-q", "-b", "feature"])?;
    repo.commit(&[("app.py", &streamlit_app("Version two"))], "two")?;
    repo.push("feature")?;
    production.github.forbid_pulls();

    let number = production
        .github
        .open_pull("ada", "demo", "feature", "Try it", None)
        .await?;

    let preview = format!("demo--pr{number}");
    let failed = wait_for(&production, &preview, "the preview", |_| true).await?;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("pull request #{number}"))
            && message.contains("Pull requests: read and write"),
        "{message}"
    );
    assert!(
        production.unacknowledged().is_empty(),
        "{:?}",
        production.unacknowledged()
    );
    Ok(())
}
