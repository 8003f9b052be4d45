//! A real browser: headless Chromium (Debian's, driven over WebDriver by chromedriver) opens the
//! console, deploys an app through its form, follows the release on the app's page until it is
//! live, then loads the app's stable URL through the proxy and sees Streamlit render the secret's
//! value over its websocket — before and after a push, which the app's page then shows with what
//! Runway did. No console page ever carries the secret.

use std::time::Duration;

use fantoccini::Locator;
use runway_tests::browser::{
    Browser, assert_accessible, fill, wait_for_log, wait_for_text, wait_for_value,
};
use runway_tests::fake_chat::{FakeChat, Service};
use runway_tests::{GitRepo, Runway, streamlit_app};

const SECRET: &str = "browser-sees-9c2d";
/// What makes the app's hook URLs and webhook key secret.
const HOOK_PATH: &str = "HOOKPATH5190";
const HOOK_KEY: &str = "browser-hook-key-0123456789";
const NEW_SECRET: &str = "browser-sees-too-41ab";
const TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_deploys_follows_rolls_back_and_deletes_an_app_in_a_real_browser()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[("streamlit_app.py", &streamlit_app("Version one"))],
    )?;
    let runway = Runway::start(dir.path())?;
    let chat = FakeChat::start().await;
    let session = Browser::start(&dir.path().join("chromium-profile")).await?;
    let browser = session.client.clone();
    let url = format!("{}/", runway.app_url("browser"));
    let outcome = async {
        // The console opens on the apps, none yet; the form is one link away.
        browser.goto(&runway.url("/")).await?;
        let empty = browser
            .find(Locator::Css("main .empty"))
            .await?
            .text()
            .await?;
        assert!(empty.contains("No apps yet"), "{empty}");
        assert_accessible(&browser).await?;
        browser
            .find(Locator::LinkText("New app"))
            .await?
            .click()
            .await?;
        // Deploy through the form, as a person would: a mistake first, shown on its field.
        browser.find(Locator::Id("repo_url")).await?;
        assert_accessible(&browser).await?;
        // Naming the repository fills in its main file (it has streamlit_app.py).
        fill(&browser, "repo_url", &repo.url()).await?;
        browser.find(Locator::Id("app_name")).await?.click().await?;
        wait_for_value(&browser, "main_file", "streamlit_app.py").await?;
        fill(&browser, "app_name", "Browser_App").await?;
        fill(&browser, "secrets", &format!("greeting = \"{SECRET}\"")).await?;
        // Plain variables, and two warm instances on two CPUs: the form says what they cost as
        // the choices change, in the words and numbers the server uses.
        fill(&browser, "env", "MODEL_NAME=small").await?;
        // Its releases announced to a signed webhook, successes too.
        fill(
            &browser,
            "notify",
            &format!(
                "webhook {} secret={HOOK_KEY} success",
                chat.webhook_url(HOOK_PATH)
            ),
        )
        .await?;
        let warm = runway_core::domain::MinInstances::new(2)?;
        let cpus = runway_core::domain::Resources::new(
            runway_core::domain::Resources::default().memory(),
            runway_core::domain::Cpu::Two,
        )?;
        let cost = warm.describe_cost(cpus);
        for (id, value) in [("cpu", "2"), ("min_instances", "2")] {
            browser
                .find(Locator::Id(id))
                .await?
                .select_by_label(value)
                .await?;
        }
        let said = browser.find(Locator::Id("warm-cost")).await?.text().await?;
        assert_eq!(said, cost);
        let submit = Locator::Css("button[type=submit]");
        browser.find(submit).await?.click().await?;
        let error = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#result.error"))
            .await?;
        let shown = error.text().await?;
        assert!(shown.contains("lowercase"), "{shown}");
        browser.find(Locator::Css("#app_name.field-error")).await?;
        fill(&browser, "app_name", "browser").await?;
        browser.find(submit).await?.click().await?;
        // The app's page follows the release (its events turn the badge live), then shows
        // itself anew with the app's link.
        let link = browser
            .wait()
            .at_most(TIMEOUT)
            .for_element(Locator::Css("dl.facts a"))
            .await?;
        assert_eq!(link.attr("href").await?.as_deref(), Some(url.as_str()));
        assert_eq!(browser.current_url().await?.path(), "/apps/browser");
        let live = browser.find(Locator::Css("h1 #state")).await?;
        assert_eq!(live.text().await?, "live");
        assert_eq!(live.attr("class").await?.as_deref(), Some("state live"));
        assert_accessible(&browser).await?;
        // The settings hold what the form sent, and the page says the same cost.
        let env = browser
            .find(Locator::Id("env"))
            .await?
            .prop("value")
            .await?;
        assert_eq!(env.as_deref(), Some("MODEL_NAME=small\n"));
        let said = browser.find(Locator::Id("warm-cost")).await?.text().await?;
        assert_eq!(said, cost);
        let releases = browser
            .find(Locator::Css("table[aria-labelledby=releases]"))
            .await?;
        let history = releases.text().await?;
        assert!(
            history.contains("manual") && history.contains("live"),
            "{history}"
        );
        assert!(
            !browser.source().await?.contains(SECRET),
            "the app page shows the secret"
        );
        // The webhook heard it go live; the page names the target by kind and host only.
        let hooks = chat
            .wait_for(Service::Webhook, 1, Duration::from_secs(30))
            .await;
        assert_eq!(hooks[0].json()["event"], "release.live");
        let targets = browser
            .find(Locator::Id("notifications"))
            .await?
            .text()
            .await?;
        assert!(
            targets.contains("Signed webhook on 127.0.0.1, and releases that go live"),
            "{targets}"
        );
        // Replaced from the page, without a redeploy; a mistake is named on the field first.
        fill(
            &browser,
            "notify",
            &format!("slack http://hooks.slack.com/services/{HOOK_PATH}"),
        )
        .await?;
        let replace = Locator::Css("#notifications button[type=submit]");
        browser.find(replace).await?.click().await?;
        let refused = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#outcome.error"))
            .await?
            .text()
            .await?;
        assert!(refused.contains("https://"), "{refused}");
        assert!(!refused.contains(HOOK_PATH), "{refused}");
        browser.find(Locator::Css("#notify.field-error")).await?;
        fill(
            &browser,
            "notify",
            &format!("slack {}", chat.slack_url(HOOK_PATH)),
        )
        .await?;
        browser.find(replace).await?.click().await?;
        browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::XPath(
                "//ul[@class='targets']/li[starts-with(., 'Slack on 127.0.0.1')]",
            ))
            .await?;
        assert_accessible(&browser).await?;
        let (_, shown) = runway.get_json("/api/apps/browser").await?;
        assert_eq!(
            shown["releases"].as_array().map(Vec::len),
            Some(1),
            "{shown:#}"
        );
        let page = browser.source().await?;
        assert!(
            !page.contains(HOOK_PATH) && !page.contains(HOOK_KEY),
            "the page shows a hook"
        );

        browser.goto(&url).await?;
        wait_for_text(&browser, "Version one").await?;
        wait_for_text(&browser, &format!("greeting: {SECRET}")).await?;

        let commit = repo.commit(
            &[("streamlit_app.py", &streamlit_app("Version two"))],
            "two",
        )?;
        repo.push("main")?;
        let release = runway.wait_for_push("browser", &commit, TIMEOUT).await?;
        assert_eq!(release["state"], "live", "{release}");
        browser.goto(&url).await?;
        wait_for_text(&browser, "Version two").await?;
        wait_for_text(&browser, &format!("greeting: {SECRET}")).await?;

        // The app's page shows the push: what Runway did with it, and the release it made.
        browser.goto(&runway.url("/apps/browser")).await?;
        // And what the app printed as it rendered, both versions, newest last.
        let log = wait_for_log(&browser, "rendering Version two").await?;
        let (one, two) = (
            log.find("rendering Version one"),
            log.find("rendering Version two"),
        );
        assert!(one.is_some() && one < two, "{log}");
        assert_accessible(&browser).await?;
        let pushes = browser
            .find(Locator::Css("table[aria-labelledby=deliveries]"))
            .await?
            .text()
            .await?;
        assert!(pushes.contains("queued a release of browser"), "{pushes}");
        assert!(pushes.contains(&commit[..7]), "{pushes}");
        let history = browser
            .find(Locator::Css("table[aria-labelledby=releases]"))
            .await?
            .text()
            .await?;
        assert!(history.contains("push"), "{history}");
        // The README's picture of the app page, when asked for (RUNWAY_SCREENSHOT=path.png).
        if let Ok(path) = std::env::var("RUNWAY_SCREENSHOT") {
            browser.set_window_size(1280, 900).await?;
            std::fs::write(path, browser.screenshot().await?)?;
        }
        // And the apps page lists it, live, at the commit that serves.
        browser.goto(&runway.url("/")).await?;
        assert_accessible(&browser).await?;
        let row = browser
            .find(Locator::Css("main tbody tr"))
            .await?
            .text()
            .await?;
        assert!(row.contains("browser") && row.contains("live"), "{row}");
        assert!(row.contains(&commit[..7]), "{row}");
        for page in ["/", "/apps/browser", "/new"] {
            browser.goto(&runway.url(page)).await?;
            assert!(
                !browser.source().await?.contains(SECRET),
                "{page} shows the secret"
            );
        }

        // Roll back from the app's page: the first release serves again.
        browser.goto(&runway.url("/apps/browser")).await?;
        browser
            .find(Locator::Css("button[data-rollback]"))
            .await?
            .click()
            .await?;
        browser
            .wait()
            .at_most(TIMEOUT)
            .for_element(Locator::XPath(
                "//table[@aria-labelledby='releases']//tr[td[4][.='rollback']]//span[.='live']",
            ))
            .await?;
        browser.goto(&url).await?;
        wait_for_text(&browser, "Version one").await?;

        // Settings, edited on the app's page. A TOML mistake in the new secrets is named with
        // its line and column on their field; then new secrets and more memory redeploy the
        // app, and the page names its secrets but shows no value.
        browser.goto(&runway.url("/apps/browser")).await?;
        let names = browser
            .find(Locator::Id("secret-names"))
            .await?
            .text()
            .await?;
        assert!(names.contains("Set: greeting."), "{names}");
        // The mistake is named as soon as the field is left, before anything is sent.
        fill(&browser, "secrets", "greeting = \"x\"\nbroken = = 1").await?;
        browser
            .find(Locator::Id("main_file"))
            .await?
            .click()
            .await?;
        let refused = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#outcome.error"))
            .await?
            .text()
            .await?;
        assert!(refused.contains("line 2, column 10"), "{refused}");
        browser.find(Locator::Css("#secrets.field-error")).await?;
        // Saving with it is refused on the page too, and no release is queued.
        let save = Locator::Css("#settings button[type=submit]");
        browser.find(save).await?.click().await?;
        browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#secrets.field-error"))
            .await?;
        let (_, shown) = runway.get_json("/api/apps/browser").await?;
        assert_eq!(
            shown["releases"].as_array().map(Vec::len),
            Some(3),
            "{shown:#}"
        );
        fill(
            &browser,
            "secrets",
            &format!("greeting = \"{NEW_SECRET}\"\ntoken = \"t0k\""),
        )
        .await?;
        browser
            .find(Locator::XPath("//select[@id='memory']/option[.='1Gi']"))
            .await?
            .click()
            .await?;
        browser.find(save).await?.click().await?;
        browser
            .wait()
            .at_most(TIMEOUT)
            .for_element(Locator::XPath(
                "//table[@aria-labelledby='releases']//tr[td[1][.='4']]//span[.='live']",
            ))
            .await?;
        let names = browser
            .find(Locator::Id("secret-names"))
            .await?
            .text()
            .await?;
        assert!(names.contains("Set: greeting, token."), "{names}");
        let facts = browser.find(Locator::Css("dl.facts")).await?.text().await?;
        assert!(facts.contains("1Gi"), "{facts}");
        assert_accessible(&browser).await?;
        let page = browser.source().await?;
        assert!(
            !page.contains(NEW_SECRET) && !page.contains("t0k"),
            "the page shows a secret"
        );
        browser.goto(&url).await?;
        wait_for_text(&browser, &format!("greeting: {NEW_SECRET}")).await?;

        // Delete behind its name: a wrong one is refused on the page, the right one deletes.
        browser.goto(&runway.url("/apps/browser")).await?;
        let confirm = browser.find(Locator::Id("confirm")).await?;
        confirm.send_keys("browse").await?;
        let delete = Locator::Css("#delete button[type=submit]");
        browser.find(delete).await?.click().await?;
        let refused = browser
            .find(Locator::Css("#outcome.error"))
            .await?
            .text()
            .await?;
        assert!(refused.contains("Type the app's name"), "{refused}");
        confirm.send_keys("r").await?;
        browser.find(delete).await?.click().await?;
        // The app's page has empty lists of its own (no previews): wait for the apps page.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while browser.current_url().await?.path() != "/" {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the delete did not open /"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css("main .empty"))
            .await?;

        // The audit trail (the local user is an admin) tells the story, and narrows to an app.
        browser
            .find(Locator::LinkText("Audit"))
            .await?
            .click()
            .await?;
        browser
            .find(Locator::Id("app"))
            .await?
            .send_keys("browser")
            .await?;
        browser
            .find(Locator::Css("form[action='/audit'] button"))
            .await?
            .click()
            .await?;
        // The narrowed page has the filter in its field's value (typing sets no attribute).
        browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::XPath("//input[@id='app' and @value='browser']"))
            .await?;
        let trail = browser
            .find(Locator::Css("main table"))
            .await?
            .text()
            .await?;
        assert_accessible(&browser).await?;
        for action in ["create", "push", "rollback", "delete"] {
            assert!(trail.contains(action), "no {action} in {trail}");
        }
        assert!(
            !browser.source().await?.contains(SECRET),
            "the audit shows the secret"
        );
        anyhow::Ok(())
    }
    .await;
    if outcome.is_err() {
        // What the page showed and what runway did, to tell a slow step from a stuck one.
        if let Ok(shown) = browser.find(Locator::Css("main")).await {
            eprintln!("the page:\n{}", shown.text().await.unwrap_or_default());
        }
        eprintln!("runway's log:\n{}", runway.log_text());
    }
    session.close().await?;
    outcome
}

/// What cleanup finds of an app's hook and repository, on the app's page in a real browser: the
/// hook it checked, a push refused because someone changed the hook's secret (and the secret
/// set again), then, once the repository is gone, the warning at the top. Each state passes axe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_page_shows_its_hook_and_a_repository_that_is_gone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("streamlit_app.py", &streamlit_app("x")),
            ("requirements.txt", "./no-such-package-here\n"),
        ],
    )?;
    // A sweep every second, past a one-second grace for new apps.
    let runway = Runway::start_with(
        dir.path(),
        &[
            ("RUNWAY_CLEANUP_INTERVAL_SECS".to_owned(), "1".to_owned()),
            ("RUNWAY_STALE_SECS".to_owned(), "1".to_owned()),
        ],
    )?;
    let (code, created) = runway
        .post_json(
            "/api/deployments",
            &serde_json::json!({
                "repo_url": repo.url(), "main_file": "streamlit_app.py", "app_name": "watched",
            }),
        )
        .await?;
    assert_eq!(code, 202, "{created}");
    let until = |what: &'static str, test: fn(&serde_json::Value) -> bool| {
        let runway = &runway;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let (_, app) = runway.get_json("/api/apps/watched").await?;
                if test(&app) {
                    return anyhow::Ok(app);
                }
                anyhow::ensure!(std::time::Instant::now() < deadline, "{what}: {app:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    until("the hook checked", |app| {
        app["hook"]["checked_at"].is_string()
    })
    .await?;

    // Someone changes the hook's secret on the repository; the next push is refused.
    let hooks = repo.bare.join("runway-webhooks");
    let file = std::fs::read_dir(&hooks)?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "json"))
        .expect("the app's hook file");
    let mut hook: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    hook["secret"] = "someone-elses".into();
    std::fs::write(&file, serde_json::to_vec(&hook)?)?;
    repo.commit(&[("notes.md", "one")], "one")?;
    let pushed = repo.push("main")?;
    assert!(pushed.contains("401"), "{pushed}");
    let app = until("the refused push seen and the secret set again", |app| {
        app["hook"]["failed"][0]["status_code"] == 401
            && app["hook"]["repaired"][1]
                .as_str()
                .is_some_and(|what| what.contains("secret"))
    })
    .await?;
    assert_eq!(app["hook"]["failed"][0]["event"], "push", "{app:#}");

    let session = Browser::start(&dir.path().join("chromium-profile")).await?;
    let browser = session.client.clone();
    let outcome = async {
        browser.goto(&runway.url("/apps/watched")).await?;
        let section = browser.find(Locator::Id("hook")).await?.text().await?;
        assert!(section.contains("Set right"), "{section}");
        assert!(section.contains("Invalid HTTP Response: 401"), "{section}");
        assert_accessible(&browser).await?;

        // The repository goes: the page says so at the top.
        std::fs::rename(&repo.bare, dir.path().join("moved-away.git"))?;
        until("the repository flagged", |app| {
            app["hook"]["repo_gone_since"].is_string()
        })
        .await?;
        browser.refresh().await?;
        let warning = browser.find(Locator::Id("repo-gone")).await?.text().await?;
        assert!(warning.contains("cannot read the repository"), "{warning}");
        assert_accessible(&browser).await?;
        anyhow::Ok(())
    }
    .await;
    if outcome.is_err() {
        eprintln!("runway's log:\n{}", runway.log_text());
    }
    session.close().await?;
    outcome
}

/// Previews on the console: the settings turn them on, the app's page lists each open pull
/// request's preview with where it serves, and a preview's own page says whose it is and offers
/// none of the app's actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_turns_previews_on_and_lists_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let repo = GitRepo::create(
        dir.path(),
        &[
            ("streamlit_app.py", &streamlit_app("Main")),
            ("requirements.txt", "streamlit\n"),
        ],
    )?;
    let runway = Runway::start(dir.path())?;
    let (code, created) = runway
        .post_json(
            "/api/deployments",
            &serde_json::json!({
                "repo_url": repo.url(), "main_file": "streamlit_app.py", "app_name": "browser",
            }),
        )
        .await?;
    assert_eq!(code, 202, "{created}");
    let first = created["release_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    runway.wait_for_release("browser", &first, TIMEOUT).await?;

    let session = Browser::start(&dir.path().join("chromium-profile")).await?;
    let browser = session.client.clone();
    let outcome = async {
        browser.goto(&runway.url("/apps/browser")).await?;
        let none = browser
            .find(Locator::Id("previews-none"))
            .await?
            .text()
            .await?;
        assert!(none.contains("Previews are off"), "{none}");

        // Turned on in the settings.
        browser
            .find(Locator::Css("#previews option[value='on']"))
            .await?
            .click()
            .await?;
        browser
            .find(Locator::Css("#settings button[type='submit']"))
            .await?
            .click()
            .await?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        while runway.status("browser").await?["previews"]["enabled"] != true {
            anyhow::ensure!(std::time::Instant::now() < deadline, "previews stayed off");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // A pull request: its preview is listed on the app's page.
        runway_tests::git(&repo.work, &["checkout", "-q", "-b", "idea"])?;
        let head = repo.commit(&[("streamlit_app.py", &streamlit_app("Idea"))], "idea")?;
        repo.push("idea")?;
        let bare = repo.bare.to_str().unwrap_or_default().to_owned();
        runway_tests::pull_request(&["open", &bare, "idea", "An idea"])?;
        loop {
            let (_, preview) = runway.get_json("/api/apps/browser--pr1").await?;
            if preview["releases"][0]["commit"] == head && preview["releases"][0]["state"] == "live"
            {
                break;
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no live preview: {preview:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        browser.goto(&runway.url("/apps/browser")).await?;
        let row = browser.find(Locator::Id("preview-1")).await?.text().await?;
        assert!(row.contains("#1 An idea"), "{row}");
        assert!(row.contains("live"), "{row}");
        assert!(row.contains("http://browser--pr1.localhost:"), "{row}");
        let selected = browser
            .find(Locator::Css("#previews option[selected]"))
            .await?
            .attr("value")
            .await?;
        assert_eq!(selected.as_deref(), Some("on"));
        assert_accessible(&browser).await?;

        // The preview's own page.
        browser
            .find(Locator::Css("#preview-1 a[href='/apps/browser--pr1']"))
            .await?
            .click()
            .await?;
        let note = browser
            .find(Locator::Id("preview-of"))
            .await?
            .text()
            .await?;
        assert!(
            note.contains("The preview of browser for pull request #1"),
            "{note}"
        );
        assert!(browser.find(Locator::Id("settings")).await.is_err());
        assert!(browser.find(Locator::Id("redeploy")).await.is_err());
        assert_accessible(&browser).await?;
        anyhow::Ok(())
    }
    .await;
    if outcome.is_err() {
        eprintln!("runway's log:\n{}", runway.log_text());
    }
    session.close().await?;
    outcome
}
