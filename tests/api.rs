//! The API against bad input: every mistake gets a 4xx that names the field and says what is
//! allowed, and a refused submit leaves nothing behind (no record, no hook, no secret file).

use std::os::unix::fs::PermissionsExt;

use runway_tests::{GitRepo, Runway, files_containing, streamlit_app};
use serde_json::{Value, json};

fn valid(repo: &GitRepo) -> Value {
    json!({
        "repo_url": repo.url(),
        "main_file": "streamlit_app.py",
        "app_name": "errors",
        "secrets": "greeting = \"hi\"",
    })
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

#[tokio::test]
async fn every_bad_field_gets_a_4xx_naming_it_and_leaves_nothing_behind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("streamlit_app.py", &streamlit_app("x"))])?;
    let runway = Runway::start(dir.path())?;
    let base = valid(&repo);
    let missing = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (missing("app_name"), 400, "app_name", "required"),
        (
            with(base.clone(), "app_name", json!("My_App")),
            400,
            "app_name",
            "lowercase",
        ),
        (
            with(
                base.clone(),
                "app_name",
                json!("a-very-long-app-name-over-thirty-chars"),
            ),
            400,
            "app_name",
            "30",
        ),
        (
            with(base.clone(), "app_name", json!("runway-submit")),
            400,
            "app_name",
            "Runway's own services",
        ),
        (missing("repo_url"), 400, "repo_url", "required"),
        (
            with(base.clone(), "repo_url", json!("https://gitlab.com/a/b")),
            400,
            "repo_url",
            "github",
        ),
        (
            with(base.clone(), "repo_url", json!("relative/path")),
            400,
            "repo_url",
            "",
        ),
        (
            with(base.clone(), "repo_url", json!("/no/such/repo.git")),
            400,
            "repo_url",
            "no git repository",
        ),
        (missing("main_file"), 400, "main_file", "required"),
        (
            with(base.clone(), "main_file", json!("../etc/passwd.py")),
            400,
            "main_file",
            "..",
        ),
        (
            with(base.clone(), "main_file", json!("app.txt")),
            400,
            "main_file",
            ".py",
        ),
        (
            with(base.clone(), "branch", json!("bad..branch")),
            400,
            "branch",
            "",
        ),
        (
            with(base.clone(), "branch", json!("no-such-branch")),
            400,
            "branch",
            "does not exist",
        ),
        (
            with(base.clone(), "region", json!("mars-north1")),
            400,
            "region",
            "local",
        ),
        (
            with(base.clone(), "memory", json!("3Gi")),
            400,
            "memory",
            "512Mi",
        ),
        (with(base.clone(), "cpu", json!("3")), 400, "cpu", "1"),
        (
            with(
                with(base.clone(), "memory", json!("8Gi")),
                "cpu",
                json!("1"),
            ),
            400,
            "memory",
            "CPU",
        ),
        (
            with(
                base.clone(),
                "secrets",
                json!("key = \"unterminated-secret-value"),
            ),
            400,
            "secrets",
            "line 1",
        ),
        (
            with(base.clone(), "secrets", json!(98765432123_u64)),
            400,
            "secrets",
            "string",
        ),
        (
            with(base.clone(), "env", json!("MODEL=small\nnot a pair")),
            400,
            "env",
            "line 2 is not NAME=value",
        ),
        (
            with(
                base.clone(),
                "env",
                json!({ "OPENAI_API_KEY": "sk-live-77ab" }),
            ),
            400,
            "env",
            "st.secrets",
        ),
        (
            with(base.clone(), "env", json!({ "PORT": "9000" })),
            400,
            "env",
            "set by Cloud Run or Runway",
        ),
        (
            with(base.clone(), "env", json!({ "MODE": 3 })),
            400,
            "env",
            "must be a string",
        ),
        (
            with(base.clone(), "min_instances", json!(4)),
            400,
            "min_instances",
            "0 to 3",
        ),
        (
            with(base.clone(), "min_instances", json!("-1")),
            400,
            "min_instances",
            "whole number",
        ),
        (
            with(
                base.clone(),
                "notify",
                json!("slack http://hooks.slack.com/services/T/B/98765432123"),
            ),
            400,
            "notify",
            "https://",
        ),
        (
            with(
                base.clone(),
                "notify",
                json!("teams https://hooks.slack.com/services/T/B/98765432123"),
            ),
            400,
            "notify",
            "Microsoft Teams hook is on",
        ),
        (
            with(
                base.clone(),
                "notify",
                json!([{ "kind": "discord", "url": "https://discord.com/api/webhooks/98765432123" }]),
            ),
            400,
            "notify",
            "not a kind",
        ),
        (
            with(
                base.clone(),
                "notify",
                json!([{ "kind": "webhook", "url": "https://ops.example.com/98765432123", "key": "x" }]),
            ),
            400,
            "notify",
            "a list of {kind, url, secret, on_success}",
        ),
        (
            with(
                base.clone(),
                "notify",
                json!("webhook https://ops.example.com/98765432123"),
            ),
            400,
            "notify",
            "needs its key",
        ),
        (
            with(base.clone(), "notify", json!(42)),
            400,
            "notify",
            "KIND URL lines",
        ),
    ];
    for (body, status, field, hint) in cases {
        let (code, answer) = runway.post_json("/api/deployments", &body).await?;
        assert_eq!(code, status, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{body} -> {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(
            message.to_lowercase().contains(&hint.to_lowercase()),
            "message for {field} should mention {hint:?}: {message}"
        );
        for secret in ["unterminated-secret-value", "98765432123"] {
            assert!(
                !message.contains(secret),
                "the error echoes the secret: {message}"
            );
        }
    }

    // Not JSON, unknown fields and wrong media types are refused too.
    let response = runway
        .client
        .post(runway.url("/api/deployments"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let (code, answer) = runway
        .post_json(
            "/api/deployments",
            &with(base.clone(), "colour", json!("red")),
        )
        .await?;
    assert_eq!(code, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("colour"),
        "{answer}"
    );
    let response = runway
        .client
        .post(runway.url("/api/deployments"))
        .header("content-type", "text/csv")
        .body("a,b")
        .send()
        .await?;
    assert_eq!(response.status(), 415);
    let response = runway
        .client
        .post(runway.url("/api/deployments"))
        .body(vec![b' '; 300 * 1024])
        .send()
        .await?;
    assert_eq!(response.status(), 413);
    let response = runway
        .client
        .put(runway.url("/api/deployments"))
        .send()
        .await?;
    assert_eq!(response.status(), 405);

    // Actions on an app that does not exist.
    let response = runway
        .client
        .post(runway.url("/api/deployments/nope/redeploy"))
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    let response = runway
        .client
        .delete(runway.url("/api/deployments/Bad_Name"))
        .send()
        .await?;
    assert_eq!(response.status(), 400);

    // The forms check secrets before they send them, with the parser a submit uses: the
    // mistake with its line and column, never the text; or the names the TOML sets.
    let (code, answer) = runway
        .post_json(
            "/new/secrets-check",
            &json!({ "secrets": "token = \"tk-5521\"\nport = = 1\n" }),
        )
        .await?;
    assert_eq!(code, 400, "{answer}");
    assert_eq!(answer["field"], "secrets");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(message.contains("line 2, column 8"), "{message}");
    assert!(!message.contains("tk-5521"), "{message}");
    let (code, answer) = runway
        .post_json(
            "/new/secrets-check",
            &json!({ "secrets": "token = \"tk-5521\"\n[db]\nport = 1\n" }),
        )
        .await?;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer, json!({ "keys": ["db", "token"] }));

    // Nothing was left behind by the refused submits.
    let (_, list) = runway.get_json("/api/apps").await?;
    assert_eq!(list["deployments"], json!([]));
    // Reads moved to /api/apps (status's); the first read paths send scripts there, and a
    // client that follows redirects gets the same answer.
    let (_, moved) = runway.get_json("/api/deployments?team=1").await?;
    assert_eq!(moved, list);
    let not_followed = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(runway.url("/api/deployments/some-app?x=1"))
        .send()
        .await?;
    assert_eq!(not_followed.status(), 308);
    assert_eq!(not_followed.headers()["location"], "/api/apps/some-app?x=1");
    assert!(
        !repo.bare.join("hooks/post-receive").exists(),
        "a refused submit left a hook"
    );
    let secrets = std::fs::read_dir(runway.data_dir.join("secrets"))?.count();
    assert_eq!(secrets, 0, "a refused submit left a secret file");

    // The form is served and posts to the API.
    let page = runway
        .client
        .get(runway.url("/new"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains("<form")
            && page.contains("/api/deployments")
            && page.contains("name=\"secrets\"")
    );
    Ok(())
}

/// The HTML form posts form-encoded, which any site's form can do too: only a post with the
/// token Runway's own page set beside its cookie is taken.
#[tokio::test]
async fn the_form_encoding_is_accepted_as_well_as_json_with_the_forms_token() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(dir.path(), &[("streamlit_app.py", &streamlit_app("x"))])?;
    let runway = Runway::start(dir.path())?;
    let page = runway.client.get(runway.url("/new")).send().await?;
    let cookie = page
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .expect("the form sets its token's cookie")
        .to_owned();
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let html = page.text().await?;
    let token = html
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the form carries its token")
        .to_owned();
    let fields = format!(
        "repo_url={}&main_file=streamlit_app.py&app_name=other&branch=nope",
        repo.url()
    );
    let post = |body: String, cookie: Option<&str>| {
        let mut request = runway
            .client
            .post(runway.url("/api/deployments"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };

    // Without the token, with a forged one, or with the token but not the browser's cookie:
    // refused before anything is read.
    for (body, cookie) in [
        (fields.clone(), Some(cookie.as_str())),
        (format!("{fields}&csrf=forged"), Some(cookie.as_str())),
        (format!("{fields}&csrf={token}"), None),
    ] {
        let response = post(body, cookie).await?;
        assert_eq!(response.status(), 403);
        let answer: Value = response.json().await?;
        assert!(
            answer["error"].as_str().unwrap().contains("token"),
            "{answer}"
        );
    }
    // With both, the form is read: here its branch is wrong.
    let response = post(format!("{fields}&csrf={token}"), Some(&cookie)).await?;
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await?;
    assert_eq!(answer["field"], "branch", "{answer}");
    Ok(())
}

/// A build that fails at once (its requirement cannot be found offline): these tests are about
/// creates, not builds.
const FAILS_FAST: &str = "./no-such-package-here\n";

/// A Streamlit app's repository whose builds fail at once (`FAILS_FAST`).
fn failing_repo(dir: &std::path::Path) -> anyhow::Result<GitRepo> {
    GitRepo::create(
        dir,
        &[
            ("streamlit_app.py", &streamlit_app("x")),
            ("requirements.txt", FAILS_FAST),
        ],
    )
}

/// Eight creates of one name at once, from different repositories with different secrets:
/// exactly one app results, with its own repository and its own secrets; the others are told
/// the name was taken, and nothing of theirs is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_of_one_name_at_once_leave_one_app_with_its_own_secrets() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut repos = Vec::new();
    for i in 0..8 {
        let path = dir.path().join(format!("repo-{i}"));
        std::fs::create_dir_all(&path)?;
        repos.push(failing_repo(&path)?);
    }
    let runway = Runway::start(dir.path())?;
    let creates = repos.iter().enumerate().map(|(i, repo)| {
        runway
            .client
            .post(runway.url("/api/deployments"))
            .json(&json!({
                "repo_url": repo.url(),
                "main_file": "streamlit_app.py",
                "app_name": "contested",
                "secrets": format!("owner = \"request {i}\""),
            }))
            .send()
    });
    let answers = futures_util::future::join_all(creates).await;

    let statuses: Vec<u16> = answers
        .iter()
        .map(|answer| answer.as_ref().map_or(0, |a| a.status().as_u16()))
        .collect();
    let winners: Vec<usize> = (0..8).filter(|&i| statuses[i] == 202).collect();
    assert_eq!(winners.len(), 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|&status| status == 202 || status == 409),
        "{statuses:?}"
    );
    let winner = winners[0];
    let status = runway.status("contested").await?;
    assert_eq!(status["repo_url"], repos[winner].url(), "{status:#}");
    let secrets = std::fs::read_to_string(runway.data_dir.join("secrets/contested/v1.toml"))?;
    assert_eq!(secrets.trim(), format!("owner = \"request {winner}\""));
    for (i, repo) in repos.iter().enumerate() {
        let hooks = repo.hook_files();
        assert_eq!(hooks.len(), usize::from(i == winner), "repo {i}: {hooks:?}");
    }
    Ok(())
}

/// Ten apps created at once from one repository: each gets its own hook (the repository's
/// post-receive script was once read half-written, and a create refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apps_created_at_once_on_one_repository_all_get_their_hooks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = failing_repo(dir.path())?;
    let runway = Runway::start(dir.path())?;
    let creates = (0..10).map(|i| {
        runway
            .client
            .post(runway.url("/api/deployments"))
            .json(&json!({
                "repo_url": repo.url(),
                "main_file": "streamlit_app.py",
                "app_name": format!("many-{i}"),
            }))
            .send()
    });
    let answers = futures_util::future::join_all(creates).await;

    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer?;
        let status = answer.status();
        assert_eq!(status, 202, "app {i}: {}", answer.text().await?);
    }
    assert_eq!(repo.hook_files().len(), 10);
    Ok(())
}

/// An update names what changes: the branch, region, memory and CPU it leaves out are the app's
/// own, not the installation's defaults.
#[tokio::test]
async fn an_update_keeps_every_setting_it_does_not_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = failing_repo(dir.path())?;
    runway_tests::git(&repo.work, &["checkout", "-q", "-b", "dev"])?;
    repo.push("dev")?;
    let runway = Runway::start(dir.path())?;
    let (code, created) = runway
        .post_json(
            "/api/deployments",
            &json!({
                "repo_url": repo.url(), "main_file": "streamlit_app.py", "app_name": "kept",
                "branch": "dev", "memory": "2Gi", "cpu": "2",
                "secrets": "api_key = \"k-93f1\"\n[db]\nurl = \"postgres://kept\"\n",
                "env": "MODEL_NAME=small\nREGION_LABEL=eu west\n", "min_instances": "1",
            }),
        )
        .await?;
    assert_eq!(code, 202, "{created}");

    let (code, updated) = runway
        .post_json(
            "/api/deployments",
            &json!({ "repo_url": repo.url(), "main_file": "app.py", "app_name": "kept" }),
        )
        .await?;

    assert_eq!(code, 202, "{updated}");
    let (_, app) = runway.get_json("/api/apps/kept").await?;
    assert_eq!(app["main_file"], "app.py", "{app:#}");
    assert_eq!(app["branch"], "dev", "{app:#}");
    assert_eq!(app["memory"], "2Gi", "{app:#}");
    assert_eq!(app["cpu"], "2", "{app:#}");
    assert_eq!(app["region"], "local", "{app:#}");
    assert_eq!(
        app["env"],
        json!({ "MODEL_NAME": "small", "REGION_LABEL": "eu west" }),
        "{app:#}"
    );
    assert_eq!(app["min_instances"], 1, "{app:#}");
    // Emptied, the variables are gone; the warm instance stays.
    let (code, cleared) = runway
        .post_json(
            "/api/deployments",
            &json!({ "repo_url": repo.url(), "main_file": "app.py", "app_name": "kept", "env": "" }),
        )
        .await?;
    assert_eq!(code, 202, "{cleared}");
    let (_, app) = runway.get_json("/api/apps/kept").await?;
    assert!(
        app["env"].as_object().is_some_and(|env| env.is_empty()),
        "{app:#}"
    );
    assert_eq!(app["min_instances"], 1, "{app:#}");
    // The secrets were kept too: their names show, never their values.
    assert_eq!(app["secret_keys"], json!(["api_key", "db"]), "{app:#}");
    let shown = app.to_string()
        + &runway
            .client
            .get(runway.url("/apps/kept"))
            .send()
            .await?
            .text()
            .await?;
    assert!(
        !shown.contains("k-93f1") && !shown.contains("postgres://kept"),
        "{shown}"
    );
    Ok(())
}

/// What an app's page listens to: the newest release's state each time it changes, its build
/// log as the builder writes it, and `done` once it is over.
#[tokio::test]
async fn an_apps_events_carry_its_release_and_build_log_until_done() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = failing_repo(dir.path())?;
    let runway = Runway::start(dir.path())?;
    let (code, created) = runway
        .post_json(
            "/api/deployments",
            &json!({ "repo_url": repo.url(), "main_file": "streamlit_app.py", "app_name": "told" }),
        )
        .await?;
    assert_eq!(code, 202, "{created}");

    let mut response = runway
        .client
        .get(runway.url("/apps/told/events"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str()?,
        "text/event-stream"
    );
    let mut stream = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await? {
            stream.push_str(&String::from_utf8_lossy(&chunk));
            if stream.contains("event: done") {
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), read).await??;

    // Each event: its name and its data lines joined, as EventSource gives them.
    let events: Vec<(String, String)> = stream
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                .collect();
            Some((name.to_owned(), data.join("\n")))
        })
        .collect();
    let states: Vec<String> = events
        .iter()
        .filter(|(name, _)| name == "release")
        .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap()["state"].to_string())
        .collect();
    assert_eq!(
        states.last().map(String::as_str),
        Some("\"failed\""),
        "{states:?}"
    );
    let log: String = events
        .iter()
        .filter(|(name, _)| name == "log")
        .map(|(_, data)| data.as_str())
        .collect();
    assert!(log.contains("no-such-package-here"), "the build log: {log}");
    // With data: EventSource drops an event whose data is empty, and the page waits on it.
    assert_eq!(
        events
            .last()
            .map(|(name, data)| (name.as_str(), data.as_str())),
        Some(("done", "failed"))
    );
    // Only the app's owner (or an admin) hears of it.
    let (code, _) = runway.get_json("/apps/nobody/events").await?;
    assert_eq!(code, 404);
    Ok(())
}

/// Once a repository is named, the new-app form learns its branches and which main file to
/// suggest: `streamlit_app.py` when the default branch has it, else `app.py`, else none.
#[tokio::test]
async fn the_form_learns_a_repositorys_branches_and_main_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let both = GitRepo::create(
        &dir.path().join("both"),
        &[("streamlit_app.py", "a"), ("app.py", "b")],
    )?;
    both.push("dev")?;
    let plain = GitRepo::create(&dir.path().join("plain"), &[("app.py", "b")])?;
    let neither = GitRepo::create(&dir.path().join("neither"), &[("main.py", "c")])?;
    let runway = Runway::start(dir.path())?;
    let facts = |repo: &GitRepo| {
        let url = format!(
            "/new/repository?repo_url={}",
            url::form_urlencoded::byte_serialize(repo.url().as_bytes()).collect::<String>()
        );
        let runway = &runway;
        async move { runway.get_json(&url).await }
    };

    let (code, found) = facts(&both).await?;
    assert_eq!(code, 200, "{found}");
    assert_eq!(found["default_branch"], "main");
    assert_eq!(found["branches"], json!(["dev", "main"]));
    assert_eq!(found["main_file"], "streamlit_app.py");
    assert_eq!(facts(&plain).await?.1["main_file"], "app.py");
    assert_eq!(facts(&neither).await?.1["main_file"], Value::Null);

    let (code, refused) = runway
        .get_json("/new/repository?repo_url=ftp%3A%2F%2Fexample.com%2Frepo")
        .await?;
    assert_eq!(code, 400, "{refused}");
    assert_eq!(refused["field"], "repo_url");
    let (code, refused) = runway.get_json("/new/repository").await?;
    assert_eq!((code, &refused["field"]), (400, &json!("repo_url")));
    Ok(())
}

/// Where an app's releases are announced is replaced on its own, without a redeploy; the
/// targets' URLs and keys are kept only in the secret store (a 0600 file here), never shown by
/// the API, the audit trail or an error, and go with the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notification_targets_are_replaced_without_a_redeploy_and_never_shown() -> anyhow::Result<()>
{
    const HOOK_PATH: &str = "XOXB0SLACKPATH7731";
    const KEY: &str = "whkey-0123456789-abcdef";
    let dir = tempfile::tempdir()?;
    let repo = failing_repo(dir.path())?;
    let runway = Runway::start(dir.path())?;
    let (code, created) = runway
        .post_json(
            "/api/deployments",
            &json!({ "repo_url": repo.url(), "main_file": "streamlit_app.py", "app_name": "told" }),
        )
        .await?;
    assert_eq!(code, 202, "{created}");
    let releases = || async {
        let (_, app) = runway.get_json("/api/apps/told").await.unwrap();
        app["releases"].as_array().map_or(0, Vec::len)
    };
    let before = releases().await;

    let lines = format!(
        "# the team\nslack https://hooks.slack.com/services/T0/B0/{HOOK_PATH}\n\
         webhook http://127.0.0.1:9/hooks/runway secret={KEY} success\n"
    );
    let put = |body: Value| {
        runway
            .client
            .put(runway.url("/api/deployments/told/notifications"))
            .json(&body)
            .send()
    };
    let answer = put(json!({ "notify": lines })).await?;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await?;
    assert_eq!(
        answer["notify"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (
                t["kind"].as_str().unwrap(),
                t["host"].as_str().unwrap(),
                t["on_success"].as_bool().unwrap()
            ))
            .collect::<Vec<_>>(),
        [
            ("slack", "hooks.slack.com", false),
            ("webhook", "127.0.0.1", true)
        ]
    );
    let (_, app) = runway.get_json("/api/apps/told").await?;
    assert_eq!(app["notify"], answer["notify"]);
    assert_eq!(
        releases().await,
        before,
        "saving targets redeployed the app"
    );

    // The targets are in the secret store and nowhere else Runway writes.
    let kept = runway.data_dir.join("secrets/told/notify.json");
    assert_eq!(
        std::fs::metadata(&kept)?.permissions().mode() & 0o777,
        0o600
    );
    for needle in [HOOK_PATH, KEY] {
        assert_eq!(
            files_containing(&runway.data_dir, needle),
            std::slice::from_ref(&kept),
            "{needle} is kept outside the secret store"
        );
    }
    let (_, audit) = runway.get_json("/api/audit?app=told").await?;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "notifications")
        .unwrap_or_else(|| panic!("no audit entry: {audit}"))
        .clone();
    let detail = entry["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("slack on hooks.slack.com"), "{entry}");
    assert!(!detail.contains(HOOK_PATH), "{entry}");

    // A refusal names the target, not its URL; what was kept stays.
    let refused =
        put(json!({ "notify": format!("slack https://hooks.slack.com.evil.example/{HOOK_PATH}") }))
            .await?;
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().await?;
    assert_eq!(refused["field"], "notify");
    assert!(!refused.to_string().contains(HOOK_PATH), "{refused}");
    let (_, app) = runway.get_json("/api/apps/told").await?;
    assert_eq!(app["notify"], answer["notify"]);
    let not_json = runway
        .client
        .put(runway.url("/api/deployments/told/notifications"))
        .header("content-type", "application/json")
        .body("slack https://x")
        .send()
        .await?;
    assert_eq!(not_json.status(), 400);

    // Emptied, they are gone from the store too.
    let emptied = put(json!({ "notify": "" })).await?;
    assert_eq!(emptied.status(), 200);
    assert!(!kept.exists());
    let (_, app) = runway.get_json("/api/apps/told").await?;
    assert_eq!(app["notify"], json!([]));

    // Set again, they go with the app.
    assert_eq!(put(json!({ "notify": lines })).await?.status(), 200);
    let deleted = runway
        .client
        .delete(runway.url("/api/deployments/told"))
        .send()
        .await?;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert!(files_containing(&runway.data_dir, HOOK_PATH).is_empty());
    Ok(())
}

/// An app deleted while its build runs is deleted whole: the build is stopped and its folder
/// removed, not left half-removed behind a 500 because uv was still writing into it. Deletes
/// come at several moments of the build (making the environment, installing, failing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_deleted_while_its_build_runs_is_deleted_whole() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("streamlit_app.py", &streamlit_app("x")),
            ("requirements.txt", "streamlit\npandas\n"),
        ],
    )?;
    let failing = failing_repo(&dir.path().join("failing"))?;
    let runway = Runway::start(dir.path())?;
    let builds = runway.data_dir.join("builds");
    for (round, after_ms) in [0u64, 30, 60, 100, 150, 250, 400, 700]
        .into_iter()
        .enumerate()
    {
        for (kind, repo) in [("ok", &repo), ("bad", &failing)] {
            let app = format!("doomed-{kind}-{round}");
            let (code, created) = runway
                .post_json(
                    "/api/deployments",
                    &json!({ "repo_url": repo.url(), "main_file": "streamlit_app.py", "app_name": app }),
                )
                .await?;
            assert_eq!(code, 202, "{created}");
            tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
            let deleted = runway
                .client
                .delete(runway.url(&format!("/api/deployments/{app}")))
                .send()
                .await?;
            let status = deleted.status();
            assert!(
                status.is_success(),
                "{app} after {after_ms} ms: {status}: {}",
                deleted.text().await?
            );
            let (code, _) = runway.get_json(&format!("/api/apps/{app}")).await?;
            assert_eq!(code, 404);
        }
    }
    // Whatever was building stops; nothing of the deleted apps stays.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: Vec<_> = std::fs::read_dir(&builds)?
            .flatten()
            .map(|e| e.path())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "builds outlived their apps: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}
