//! A real browser for the console's tests: Debian's headless Chromium, driven over WebDriver by
//! chromedriver (scripts/test installs both), and axe-core's accessibility checks on the page.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// chromedriver and the Chromium session it drives; both end when this is dropped (call
/// [`Browser::close`] first to end the session cleanly).
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// A fresh headless Chromium with its profile in `profile`.
    pub async fn start(profile: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver =
            Command::new(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    anyhow::anyhow!("chromedriver is not installed (scripts/test installs it): {e}")
                })?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await?;
        Ok(Self { client, driver })
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        Ok(())
    }
}

/// Waits until a paragraph or heading on the page contains `text`.
pub async fn wait_for_text(browser: &Client, text: &str) -> anyhow::Result<()> {
    let xpath = format!("//*[self::p or self::h1][contains(., '{text}')]");
    browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::XPath(&xpath))
        .await
        .map_err(|e| anyhow::anyhow!("the page never showed {text:?}: {e}"))?;
    Ok(())
}

/// Waits until the app page's runtime log shows `text`, and answers the whole log.
pub async fn wait_for_log(browser: &Client, text: &str) -> anyhow::Result<String> {
    let xpath = format!("//pre[@id='app-log'][contains(., '{text}')]");
    let log = browser
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::XPath(&xpath))
        .await
        .map_err(|e| anyhow::anyhow!("the app's log never showed {text:?}: {e}"))?;
    Ok(log.text().await?)
}

/// Replaces the text of the field with id `id`, as a person typing.
pub async fn fill(browser: &Client, id: &str, text: &str) -> anyhow::Result<()> {
    let field = browser.find(Locator::Id(id)).await?;
    field.clear().await?;
    field.send_keys(text).await?;
    Ok(())
}

/// Waits until the field with id `id` holds `value` (a page's script fills it in).
pub async fn wait_for_value(browser: &Client, id: &str, value: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let field = browser.find(Locator::Id(id)).await?;
        let now = field.prop("value").await?.unwrap_or_default();
        if now == value {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "#{id} holds {now:?}, never {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element `css` selects.
pub async fn text_of(browser: &Client, css: &str) -> anyhow::Result<String> {
    Ok(browser.find(Locator::Css(css)).await?.text().await?)
}

/// axe-core (scripts/test installs it, pinned) on the page the browser shows: no serious or
/// critical violation of WCAG 2.1 A and AA.
pub async fn assert_accessible(browser: &Client) -> anyhow::Result<()> {
    let path = std::env::var("AXE_CORE_JS")
        .map_err(|_| anyhow::anyhow!("AXE_CORE_JS is not set: run the tests with scripts/test"))?;
    let axe = std::fs::read_to_string(path)?;
    browser.execute(&axe, vec![]).await?;
    let found = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag',
                 values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
               .then(result => done(result.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => v.id + ': ' + v.help + ' at '
                   + v.nodes.map(n => n.target.join(' ')).join(', '))))
               .catch(error => done(['axe did not run: ' + error]));",
            vec![],
        )
        .await?;
    let violations: Vec<String> = serde_json::from_value(found)?;
    let page = browser.current_url().await?;
    anyhow::ensure!(violations.is_empty(), "{page}: {violations:#?}");
    Ok(())
}
