//! The console as a person meets it on Google Cloud: the five function binaries as separate
//! processes behind the stand-in for the load balancer and IAP (`support/load_balancer.rs`,
//! routing by `infra/url_map.json`), in headless Chromium signed in to Google. From one origin
//! they create an app through the form (submit's page) and follow it on its page (status's) until
//! it is live with its build log streaming in; create a second app on the same repository; push,
//! which GitHub delivers to both apps' hooks, and see the delivery and the new release on each
//! page; push to another branch and see it ignored with its reason; roll back; delete. No page
//! and no event stream carries the secret; the admin's audit trail tells the story.

use std::time::Duration;

use fantoccini::{Client, Locator};
use reqwest::Method;
use runway_tests::browser::{
    Browser, assert_accessible, fill, text_of, wait_for_log, wait_for_value,
};
use runway_tests::production::{ADMIN, OTHER_REGION, Production, REGION};
use runway_tests::streamlit_app;

const OWNER: &str = "ada@example.com";
const SECRET: &str = "console-secret-77d1";
const WAIT: Duration = Duration::from_secs(120);

/// Fills the new-app form and submits it, and waits until the form has opened the app's page.
async fn create_through_the_form(browser: &Client, base: &str, app: &str) -> anyhow::Result<()> {
    browser.goto(&format!("{base}/")).await?;
    browser
        .find(Locator::LinkText("New app"))
        .await?
        .click()
        .await?;
    // Naming the repository fills in its main file: GitHub says it has app.py.
    fill(browser, "repo_url", "https://github.com/ada/demo").await?;
    browser.find(Locator::Id("app_name")).await?.click().await?;
    wait_for_value(browser, "main_file", "app.py").await?;
    fill(browser, "app_name", app).await?;
    fill(browser, "secrets", &format!("greeting = \"{SECRET}\"")).await?;
    browser
        .find(Locator::Css("button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_for_path(browser, &format!("/apps/{app}")).await
}

/// Waits until the page's own script has taken the browser to `path`.
async fn wait_for_path(browser: &Client, path: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while browser.current_url().await?.path() != path {
        if std::time::Instant::now() > deadline {
            let shown = text_of(browser, "main").await.unwrap_or_default();
            anyhow::bail!("the page never went to {path}: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits, on the app's page, until a release with `trigger` is live (the page follows the
/// release and shows itself anew when it is over).
async fn wait_live(browser: &Client, base: &str, app: &str, trigger: &str) -> anyhow::Result<()> {
    if browser.current_url().await?.path() != format!("/apps/{app}") {
        browser.goto(&format!("{base}/apps/{app}")).await?;
    }
    let row =
        format!("//table[@aria-labelledby='releases']//tr[td[4][.='{trigger}']]//span[.='live']");
    browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&row))
        .await
        .map_err(|e| anyhow::anyhow!("no live {trigger} release of {app}: {e}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_runs_apps_from_one_origin_behind_iap_in_a_real_browser() -> anyhow::Result<()>
{
    let production = Production::start().await?;
    let dir = tempfile::tempdir()?;
    let (repo, _) = production.demo_repo(dir.path())?;
    let first_commit = runway_tests::git(&repo.work, &["rev-parse", "HEAD"])?;
    // Long enough to watch the build log arrive on the page.
    production
        .cloud_build
        .set_build_duration(Duration::from_secs(3));
    production.lb.sign_in_as(Some(OWNER));
    let browser = Browser::start(&dir.path().join("chromium-profile")).await?;
    let base = production.lb.url.clone();
    let b = &browser.client;
    let outcome = async {
        // Signed in to Google, the person opens the console: IAP takes them through its
        // sign-in and back to the page they asked for.
        b.goto(&format!("{base}/")).await?;
        assert_eq!(b.current_url().await?.path(), "/");
        let empty = text_of(b, "main .empty").await?;
        assert!(empty.contains("No apps yet"), "{empty}");
        assert_accessible(b).await?;

        // The form (submit's) hands over to the app's page (status's): its build log streams
        // in while Cloud Build works, then the page shows the app live.
        create_through_the_form(b, &base, "demo").await?;
        b.wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(
                "//pre[@id='build-log'][contains(., 'Fetching storage object')]",
            ))
            .await
            .map_err(|e| anyhow::anyhow!("the build log never streamed in: {e}"))?;
        assert_eq!(b.current_url().await?.path(), "/apps/demo");
        wait_live(b, &base, "demo", "manual").await?;
        let service = production
            .cloud_run
            .service(&format!(
                "projects/{}/locations/europe-west1/services/demo",
                production.project
            ))
            .expect("the Cloud Run service exists");
        let link = b.find(Locator::Css("dl.facts a")).await?;
        assert_eq!(link.attr("href").await?.as_deref(), service["uri"].as_str());
        assert_eq!(text_of(b, "h1 #state").await?, "live");
        // What the revision printed as it started, read by status from Cloud Logging.
        wait_for_log(b, "You can now view your Streamlit app").await?;
        assert_accessible(b).await?;
        // The release's whole build log is one link away, for people with no access to Cloud
        // Build.
        b.find(Locator::LinkText("build log"))
            .await?
            .click()
            .await?;
        let log = b.find(Locator::Css("body")).await?.text().await?;
        assert!(log.contains("DONE"), "{log}");

        // A second app on the same repository.
        create_through_the_form(b, &base, "demo-two").await?;
        wait_live(b, &base, "demo-two", "manual").await?;
        let hooks = production.github.hooks("ada", "demo");
        assert_eq!(hooks.len(), 2, "{hooks:?}");

        // A push to main: GitHub delivers it to both apps' hooks through the load balancer,
        // and each app's page shows the delivery and the release it made. Meanwhile the app's
        // event stream carries the build's log, and never the secret.
        let commit = repo.commit(&[("app.py", &streamlit_app("Version two"))], "two")?;
        repo.push("main")?;
        let deliveries = production
            .github
            .push("ada", "demo", "main", &first_commit, &commit)
            .await;
        assert_eq!(deliveries.len(), 2, "{deliveries:?}");
        assert!(
            deliveries.iter().all(|d| d.status == Some(202)),
            "{deliveries:?}\n{}",
            production.logs()
        );
        let events = production
            .as_user(Method::GET, "status", "/apps/demo/events", OWNER)
            .send()
            .await?
            .text()
            .await?;
        assert!(events.contains("event: done"), "{events}");
        assert!(
            !events.contains(SECRET),
            "the event stream carries the secret"
        );
        for app in ["demo", "demo-two"] {
            b.goto(&format!("{base}/apps/{app}")).await?;
            wait_live(b, &base, app, "push").await?;
            let pushes = text_of(b, "table[aria-labelledby=deliveries]").await?;
            assert!(
                pushes.contains(&format!("queued a release of {app}")),
                "{pushes}"
            );
            assert!(pushes.contains(&commit[..7]), "{pushes}");
        }

        // A push to another branch is ignored, and the page says why.
        let deliveries = production
            .github
            .push("ada", "demo", "feature", &"0".repeat(40), &commit)
            .await;
        assert!(
            deliveries
                .iter()
                .all(|d| d.status == Some(202) && d.response.contains("ignored")),
            "{deliveries:?}"
        );
        b.goto(&format!("{base}/apps/demo")).await?;
        let pushes = text_of(b, "table[aria-labelledby=deliveries]").await?;
        assert!(
            pushes
                .contains("ignored: no app deploys branch feature of ada/demo (demo deploys main)"),
            "{pushes}"
        );
        assert_accessible(b).await?;
        for page in ["/", "/apps/demo", "/apps/demo-two", "/new"] {
            b.goto(&format!("{base}{page}")).await?;
            assert!(
                !b.source().await?.contains(SECRET),
                "{page} shows the secret"
            );
        }

        // Roll demo back to its first release, from its page.
        b.goto(&format!("{base}/apps/demo")).await?;
        b.find(Locator::Css("button[data-rollback]"))
            .await?
            .click()
            .await?;
        wait_live(b, &base, "demo", "rollback").await?;

        // Move demo to the other region from its settings: release #4 goes live there, and
        // the old region's service is gone.
        b.find(Locator::XPath(&format!(
            "//select[@id='region']/option[.='{OTHER_REGION}']"
        )))
        .await?
        .click()
        .await?;
        b.find(Locator::Css("#settings button[type=submit]"))
            .await?
            .click()
            .await?;
        b.wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(
                "//table[@aria-labelledby='releases']//tr[td[1][.='4']]//span[.='live']",
            ))
            .await
            .map_err(|e| anyhow::anyhow!("the move never went live: {e}"))?;
        let facts = text_of(b, "dl.facts").await?;
        assert!(facts.contains(OTHER_REGION), "{facts}");
        let service = |region: &str| {
            production.cloud_run.service(&format!(
                "projects/{}/locations/{region}/services/demo",
                production.project
            ))
        };
        assert!(service(OTHER_REGION).is_some());
        assert!(
            service(REGION).is_none(),
            "the old region's service still runs"
        );

        // Delete both behind their names; the apps page is empty again.
        for app in ["demo-two", "demo"] {
            b.goto(&format!("{base}/apps/{app}")).await?;
            fill(b, "confirm", app).await?;
            b.find(Locator::Css("#delete button[type=submit]"))
                .await?
                .click()
                .await?;
            wait_for_path(b, "/").await?;
        }
        assert!(text_of(b, "main .empty").await?.contains("No apps yet"));
        assert!(production.github.hooks("ada", "demo").is_empty());

        // An admin, in a browser signed in as themself, reads the audit trail.
        b.delete_all_cookies().await?;
        production.lb.sign_in_as(Some(ADMIN));
        b.goto(&format!("{base}/audit?app=demo")).await?;
        let trail = text_of(b, "main table").await?;
        for action in ["create", "push", "rollback", "delete"] {
            assert!(trail.contains(action), "no {action} in {trail}");
        }
        assert_accessible(b).await?;
        assert!(!b.source().await?.contains(SECRET));
        anyhow::Ok(())
    }
    .await;
    if outcome.is_err() {
        let url = b
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default();
        let source = b.source().await.unwrap_or_default();
        eprintln!("the browser shows {url}:\n{source}\n{}", production.logs());
    }
    browser.close().await?;
    outcome
}
