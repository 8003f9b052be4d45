//! Rollback, redeploy and the audit trail, through the API.

use std::time::Duration;

use runway_tests::{GitRepo, Runway, streamlit_app};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_brings_back_an_earlier_release_and_a_redeploy_the_branch_head()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("streamlit_app.py", &streamlit_app("One"))])?;
    let runway = Runway::start(dir.path())?;
    let first = runway
        .deploy("other", &repo, "streamlit_app.py", "greeting = \"x\"")
        .await?;
    let head = repo.commit(&[("streamlit_app.py", &streamlit_app("Two"))], "two")?;
    repo.push("main")?;
    let second = runway.wait_for_push("other", &head, TIMEOUT).await?;
    assert_eq!(second["state"], "live");
    let second = second["id"].as_str().unwrap_or_default().to_owned();

    // Nothing but a release that was live can come back.
    let (code, answer) = runway
        .post_json(
            "/api/deployments/other/rollback",
            &json!({ "release_id": "no-such-release" }),
        )
        .await?;
    assert_eq!(
        (code, answer["field"].as_str()),
        (400, Some("release_id")),
        "{answer}"
    );
    let (code, answer) = runway
        .post_json(
            "/api/deployments/other/rollback",
            &json!({ "release_id": second }),
        )
        .await?;
    assert_eq!(code, 400, "rolling back to the live release: {answer}");

    // Default: the release live before the current one, without building again.
    let (code, answer) = runway
        .post_json("/api/deployments/other/rollback", &json!({}))
        .await?;
    assert_eq!(code, 202, "{answer}");
    let rollback_id = answer["release_id"].as_str().unwrap().to_owned();
    let rollback = runway
        .wait_for_release("other", &rollback_id, TIMEOUT)
        .await?;
    assert_eq!(rollback["state"], "live", "{rollback:#}");
    assert_eq!(rollback["trigger"], "rollback");
    assert_eq!(rollback["rollback_of"], first["id"]);
    assert_eq!(rollback["commit"], first["commit"]);
    assert_eq!(
        rollback["build_id"], first["build_id"],
        "a rollback must not build again"
    );
    assert_eq!(
        runway.status("other").await?["live_release"],
        rollback_id.as_str()
    );

    // A redeploy builds the branch head again.
    let (code, answer) = runway
        .post_json("/api/deployments/other/redeploy", &json!({}))
        .await?;
    assert_eq!(code, 202, "{answer}");
    let redeploy = runway
        .wait_for_release("other", answer["release_id"].as_str().unwrap(), TIMEOUT)
        .await?;
    assert_eq!(
        (redeploy["state"].as_str(), redeploy["trigger"].as_str()),
        (Some("live"), Some("manual"))
    );
    assert_eq!(redeploy["commit"], head.as_str());
    assert_eq!(redeploy["clear_cache"], false, "{redeploy:#}");
    // With the build cache cleared: uv checks every package with the index again, and the
    // release and its log say so. A field the redeploy does not know is refused by name.
    let (code, answer) = runway
        .post_json(
            "/api/deployments/other/redeploy",
            &json!({ "clear_cache": true }),
        )
        .await?;
    assert_eq!(code, 202, "{answer}");
    let rebuilt = runway
        .wait_for_release("other", answer["release_id"].as_str().unwrap(), TIMEOUT)
        .await?;
    assert_eq!(rebuilt["state"], "live", "{rebuilt:#}");
    assert_eq!(rebuilt["clear_cache"], true, "{rebuilt:#}");
    let log = runway
        .client
        .get(runway.url(&format!(
            "/api/builds/{}/log",
            rebuilt["build_id"].as_str().unwrap_or_default()
        )))
        .send()
        .await?
        .text()
        .await?;
    assert!(log.contains("build cache cleared"), "{log}");
    let (code, refused) = runway
        .post_json(
            "/api/deployments/other/redeploy",
            &json!({ "clear_caches": true }),
        )
        .await?;
    assert_eq!(code, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("clear_caches"),
        "{refused}"
    );

    // Every action is in the audit trail, with who did it.
    let (code, audit) = runway.get_json("/api/audit?app=other").await?;
    assert_eq!(code, 200);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    for action in ["create", "push", "rollback", "redeploy", "release-live"] {
        assert!(actions.contains(&action), "no {action} in {actions:?}");
    }
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "ada@example.com")
    );
    Ok(())
}

/// The secrets the app's one running process reads (its `--secrets.files`), once the process
/// a deploy replaced has drained.
fn running_secrets(runway: &Runway) -> anyhow::Result<String> {
    let data = runway.data_dir.display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let pids = loop {
        let pids = runway_tests::processes_mentioning(&data, runway.pid());
        if pids.len() == 1 || std::time::Instant::now() > deadline {
            break pids;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    anyhow::ensure!(pids.len() == 1, "expected one app process: {pids:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0]))?;
    let file = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .find_map(|arg| arg.strip_prefix("--secrets.files=").map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("no --secrets.files"))?;
    Ok(std::fs::read_to_string(file)?.trim().to_owned())
}

/// A secrets update whose release fails leaves the running app on its own secrets, and a
/// rollback brings back the secrets the release it returns to ran with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_with_the_release_that_ran_with_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("streamlit_app.py", &streamlit_app("One"))])?;
    let runway = Runway::start(dir.path())?;
    let first = runway
        .deploy("kept", &repo, "streamlit_app.py", "token = \"first\"")
        .await?;
    let update = |secrets: &str| {
        json!({
            "repo_url": repo.url(), "main_file": "streamlit_app.py", "app_name": "kept",
            "secrets": secrets,
        })
    };
    let (code, answer) = runway
        .post_json("/api/deployments", &update("token = \"second\""))
        .await?;
    assert_eq!(code, 202, "{answer}");
    let second = runway
        .wait_for_release("kept", answer["release_id"].as_str().unwrap(), TIMEOUT)
        .await?;
    assert_eq!(second["state"], "live", "{second:#}");
    assert_eq!(running_secrets(&runway)?, "token = \"second\"");

    // An update whose build fails: the app keeps running, on its own secrets.
    repo.commit(
        &[("requirements.txt", "./no-such-package-here\n")],
        "broken",
    )?;
    repo.push("main")?;
    let (code, answer) = runway
        .post_json("/api/deployments", &update("token = \"third\""))
        .await?;
    assert_eq!(code, 202, "{answer}");
    let failed = runway
        .wait_for_release("kept", answer["release_id"].as_str().unwrap(), TIMEOUT)
        .await?;
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert_eq!(running_secrets(&runway)?, "token = \"second\"");

    // Back to the first release: with the secrets it ran with.
    let (code, answer) = runway
        .post_json(
            "/api/deployments/kept/rollback",
            &json!({ "release_id": first["id"] }),
        )
        .await?;
    assert_eq!(code, 202, "{answer}");
    let rollback = runway
        .wait_for_release("kept", answer["release_id"].as_str().unwrap(), TIMEOUT)
        .await?;
    assert_eq!(rollback["state"], "live", "{rollback:#}");
    assert_eq!(running_secrets(&runway)?, "token = \"first\"");
    Ok(())
}
