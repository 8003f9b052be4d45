//! runway as a supervisor: an app process that dies is started again; stopping runway stops
//! every app; starting it again on the same data dir serves the live apps again.

use std::time::{Duration, Instant};

use runway_tests::{GitRepo, RUNWAYS_OWN_CREDENTIAL, Runway, processes_mentioning, streamlit_app};

async fn healthy(runway: &Runway, app: &str) -> bool {
    runway
        .health(app)
        .await
        .is_ok_and(|(status, body)| status == 200 && body == "ok")
}

async fn until_healthy(runway: &Runway, app: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(runway, app).await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{app} did not come back:\n{}",
            runway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn kill(pid: u32) {
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_are_restarted_stopped_with_runway_and_restored_after_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("streamlit_app.py", &streamlit_app("Up"))])?;
    let mut runway = Runway::start(dir.path())?;
    runway
        .deploy("other", &repo, "streamlit_app.py", "greeting = \"x\"")
        .await?;
    let data = runway.data_dir.display().to_string();

    // The app runs with an environment of its own: nothing of Runway's settings or
    // credentials. And the data folder (secrets, logs, database, code) is Runway's alone.
    let before = processes_mentioning(&data, runway.pid());
    assert_eq!(before.len(), 1, "expected one app process: {before:?}");
    let environ = std::fs::read(format!("/proc/{}/environ", before[0]))?;
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    assert!(!environ.contains(RUNWAYS_OWN_CREDENTIAL), "{environ}");
    assert!(!environ.contains("RUNWAY_"), "{environ}");
    assert!(environ.contains("PATH="), "{environ}");
    let mode = |path: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&runway.data_dir), 0o700);
    let database = std::fs::read_dir(&runway.data_dir)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "db"))
        .expect("the database");
    assert_eq!(mode(&database), 0o600, "{}", database.display());

    // A crash: the supervisor starts the app again and the proxy follows it.
    kill(before[0]);
    until_healthy(&runway, "other").await?;
    let after = processes_mentioning(&data, runway.pid());
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "the same process cannot have come back");

    // Stopping runway stops its apps.
    runway.stop();
    assert!(
        processes_mentioning(&data, 0).is_empty(),
        "an app outlived runway"
    );

    // Started again on the same data, it serves the live app again, without a new release.
    let runway = Runway::start(dir.path())?;
    until_healthy(&runway, "other").await?;
    let status = runway.status("other").await?;
    assert_eq!(
        status["releases"].as_array().unwrap().len(),
        1,
        "{status:#}"
    );
    assert_eq!(status["releases"][0]["state"], "live");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_never_gets_ready_fails_and_the_previous_one_keeps_serving()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("streamlit_app.py", &streamlit_app("Up"))])?;
    let runway = Runway::start(dir.path())?;
    let first = runway
        .deploy("other", &repo, "streamlit_app.py", "greeting = \"x\"")
        .await?;

    // Streamlit refuses to start with this config: the new process exits before it is ready.
    let commit = repo.commit(
        &[(
            ".streamlit/config.toml",
            "[global]\ndevelopmentMode = true\n",
        )],
        "a config Streamlit refuses",
    )?;
    repo.push("main")?;
    let release = runway
        .wait_for_push("other", &commit, Duration::from_secs(120))
        .await?;

    assert_eq!(release["state"], "failed", "{release:#}");
    let message = release["message"].as_str().unwrap_or_default();
    assert!(message.contains("never became ready"), "{message}");
    assert!(
        message.contains("developmentMode"),
        "no log excerpt in: {message}"
    );
    assert!(
        healthy(&runway, "other").await,
        "the previous version stopped serving"
    );
    assert_eq!(runway.status("other").await?["live_release"], first["id"]);
    let data = runway.data_dir.display().to_string();
    assert_eq!(
        processes_mentioning(&data, runway.pid()).len(),
        1,
        "the failed revision still runs"
    );
    Ok(())
}

/// An app deleted while its release deploys: the deploy finishes after the delete, and what it
/// started must not serve on with no record (the worker removes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_deleted_while_it_deploys_leaves_nothing_running() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("streamlit_app.py", &streamlit_app("Up"))])?;
    let runway = Runway::start(dir.path())?;
    let body = serde_json::json!({
        "repo_url": repo.url(), "main_file": "streamlit_app.py", "app_name": "doomed",
    });
    let (code, submitted) = runway.post_json("/api/deployments", &body).await?;
    assert_eq!(code, 202, "{submitted}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = runway.status("doomed").await?;
        if status["latest_release"]["state"] == "deploying" {
            break;
        }
        assert!(Instant::now() < deadline, "never deploying: {status:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let deleted = runway
        .client
        .delete(runway.url("/api/deployments/doomed"))
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.text().await?);

    let data = runway.data_dir.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes_mentioning(&data, runway.pid()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the deleted app still runs: {:?}",
            processes_mentioning(&data, runway.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !healthy(&runway, "doomed").await,
        "the deleted app is served"
    );
    Ok(())
}

/// A hook finds runway where it listens now: started again on another port (port 0 picks a new
/// one each time), a push still deploys the app, with no resubmit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_runway_started_again_on_another_port() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("streamlit_app.py", &streamlit_app("Up"))])?;
    let mut runway = Runway::start(dir.path())?;
    runway
        .deploy("other", &repo, "streamlit_app.py", "greeting = \"x\"")
        .await?;
    runway.stop();
    // Held while runway starts again, the old port cannot be runway's again: a hook that
    // still posted there would reach no runway.
    let _old_port = std::net::TcpListener::bind(("127.0.0.1", runway.port))?;
    let runway = Runway::start(dir.path())?;

    let commit = repo.commit(
        &[("streamlit_app.py", &streamlit_app("Moved"))],
        "after runway moved",
    )?;
    let pushed = repo.push("main")?;

    assert!(
        pushed.contains(&format!("delivered to {}/", runway.base_url)),
        "the push went elsewhere:\n{pushed}"
    );
    let release = runway
        .wait_for_push("other", &commit, Duration::from_secs(180))
        .await?;
    assert_eq!(release["state"], "live", "{release:#}");
    Ok(())
}
